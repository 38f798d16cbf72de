"""Calls every route of a running daemon through a client generated from its own
/openapi.json (openapi-python-client), and checks each answer's status and that the
client could read its body as the document describes it.

    python call_every_route.py <base url> <token> <openapi.json>

The generated package `evhost_client` must be importable. Webhook deliveries go to a
receiver this script runs on 127.0.0.1.
"""

import datetime
import http.server
import importlib
import json
import sys
import threading
from http import HTTPStatus

import httpx
from evhost_client import AuthenticatedClient
from evhost_client import models

base_url, token, document = sys.argv[1], sys.argv[2], sys.argv[3]
client = AuthenticatedClient(base_url=base_url, token=token, timeout=httpx.Timeout(10.0))
with open(document) as f:
    paths = json.load(f)["paths"]
operations = {
    op["operationId"]: (method.upper(), path, op["tags"][0].replace("-", "_"))
    for path, item in paths.items()
    for method, op in item.items()
}
called = set()
failures = []


def api(operation_id):
    _, _, tag = operations[operation_id]
    return importlib.import_module(f"evhost_client.api.{tag}.{operation_id}")


def call(operation_id, expected, **kwargs):
    """One call through the generated function; the parsed body when it has one."""
    method, path, _ = operations[operation_id]
    called.add(operation_id)
    response = api(operation_id).sync_detailed(client=client, **kwargs)
    status = int(response.status_code)
    ok = status in expected
    # A documented JSON body must come back as the generated class.
    documented = paths[path][method.lower()]["responses"].get(str(status), {})
    typed = response.parsed is not None or "application/json" not in documented.get("content", {})
    line = f"{method:6} {path:36} {status}"
    if not ok or not typed:
        why = f"expected {sorted(expected)}" if not ok else "the body did not parse"
        failures.append(f"{line}: {why}: {response.content[:300]!r}")
        print(f"FAIL {line}: {why}")
        if operation_id in NEEDED:
            print("\n".join(failures))
            sys.exit(1)
    else:
        print(f"ok   {line} {type(response.parsed).__name__}")
    return response.parsed


# Calls whose answer the next ones need: a failure stops the run.
NEEDED = {"events_publish_one", "events_publish_batch", "audit_query", "webhooks_create",
          "webhooks_test"}


class Receiver(http.server.BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"

# Operations.
call("operations_healthz", {200})
call("operations_readyz", {200})
call("operations_metrics", {200})
call("operations_list", {200})
call("operations_me", {200})
call("operations_rates", {200})

# Events, through the generated classes of the document's event branches.
call("events_event_types", {200})
received = models.MessageReceivedEvent.from_dict({
    "type": "message.received",
    "id": "client-1",
    "time": "2026-11-27T10:00:00Z",
    "data": {
        "message_id": "m1", "from": "a@example.org", "to": ["b@example.com"],
        "subject": "hi", "size": 12, "domain": "example.com", "user": "b@example.com",
        "mailbox": "INBOX", "is_spam": False,
    },
})
accepted = call("events_publish_one", {202}, body=received)
assert accepted.id == "client-1", accepted
call("events_publish_one", {200}, body=models.CustomEvent.from_dict(
    {"type": "billing.invoice_paid", "data": {"amount": 12}}), wait=True)
batch = call("events_publish_batch", {202}, body=[
    models.UserLoginEvent.from_dict({"type": "user.login", "data": {
        "user_id": "0190a8f0-0000-7000-8000-000000000001", "email": "b@example.com",
        "ip": "192.0.2.1", "user_agent": "imapd", "protocol": "imap", "success": True}}),
    models.CustomEvent.from_dict({"type": "billing.refund", "data": {}}),
])
assert len(batch.ids) == 2, batch
called.add("events_stream")
kwargs = api("events_stream")._get_kwargs(types="message.*,billing.*")
with client.get_httpx_client().stream(**kwargs) as stream:
    status = stream.status_code
    kind = stream.headers.get("content-type", "")
    print(f"{'ok' if status == 200 else 'FAIL':4} GET    /v1/events/stream {status} {kind}")
    if status != 200 or not kind.startswith("text/event-stream"):
        failures.append(f"GET /v1/events/stream: {status} {kind}")

# Audit.
page = call("audit_query", {200}, types="message.*", limit=10)
assert any(row.event_id == "client-1" for row in page.rows), page
call("audit_verify", {200})

# Webhooks: a whole life, with deliveries to the receiver above.
created = call("webhooks_create", {201}, body=models.NewEndpoint.from_dict(
    {"name": "generated client", "url": hook, "events": ["message.*"]}))
wid = created.id
call("webhooks_list", {200})
call("webhooks_get", {200}, id=wid)
call("webhooks_update", {200}, id=wid, body=models.EndpointPatch.from_dict({"name": "renamed"}))
call("webhooks_disable", {200}, id=wid)
call("webhooks_enable", {200}, id=wid)
call("webhooks_rotate_secret", {200}, id=wid)
test = call("webhooks_test", {200}, id=wid)
call("webhooks_deliveries", {200}, id=wid, limit=5)
call("webhooks_delivery", {200}, id=test.id)
# A delivery still pending is refused (409); a finished one is sent again (202).
call("webhooks_retry", {202, 409}, id=test.id)
since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1))
call("webhooks_replay", {202}, id=wid, since=since.replace(microsecond=0))
call("webhooks_delete", {204}, id=wid)
call("webhooks_get", {404}, id=wid)

# Dead letters: none here, so the ones by id answer 404 with the error body.
call("dead_letters_list", {200}, limit=10)
call("dead_letters_get", {404}, id=1)
call("dead_letters_retry", {404}, id=1)
call("dead_letters_discard", {404}, id=1)

# Plugins: none loaded here.
call("plugins_list", {200})
call("plugins_get", {404}, name="absent")
call("plugins_reload", {404}, name="absent")
call("plugins_shadow", {404}, name="absent")
call("plugins_promote", {404}, name="absent")

missing = sorted(set(operations) - called)
if missing:
    failures.append(f"operations never called: {missing}")
print(f"{len(called)} of {len(operations)} operations called; "
      f"{Receiver.received} webhook deliveries received")
if failures:
    print("\n".join(failures))
    sys.exit(1)
