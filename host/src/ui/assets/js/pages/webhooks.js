// Webhooks: the endpoints (list, create with the secret shown once), and one
// endpoint (#/webhooks/<id>): edit, enable/disable, rotate the secret, send a test,
// delete, replay its failed deliveries since a time, its deliveries by status.

import { api, get, post, query } from "../api.js";
import { action, badge, clear, field, h, number, pager, say, table, time } from "../dom.js";

export async function render(root, ctx) {
  if (!ctx.can("admin")) {
    clear(root, h("h1", {}, "Webhooks"),
      h("p", { class: "muted" }, "Webhook endpoints and their deliveries need a token with the admin scope (the API answers 403 to this token)."));
    return;
  }
  if (ctx.args[0]) return endpoint(root, ctx, ctx.args[0]);
  return list(root, ctx);
}

/// The secret, shown once with a copy button: the API never shows it again.
function secretBox(secret, what = "Signing secret") {
  const input = h("input", { type: "text", readonly: true, value: secret, id: "secret", class: "mono", "aria-label": what });
  const copy = h("button", { type: "button", id: "copy-secret" }, "Copy");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(secret);
      copy.textContent = "Copied";
    } catch {
      document.execCommand("copy");
      copy.textContent = "Copied";
    }
  });
  return h("div", { class: "notice", role: "alert" },
    h("strong", {}, `${what}: `), "copy it now; it is not shown again.",
    h("div", { class: "row" }, input, copy));
}

function endpointFields(e = {}) {
  const inputs = {
    name: h("input", { type: "text", name: "name", required: true, value: e.name ?? "" }),
    url: h("input", { type: "url", name: "url", required: true, value: e.url ?? "", placeholder: "https://receiver.example/hooks" }),
    events: h("input", { type: "text", name: "events", required: true, value: (e.events ?? ["*"]).join(", ") }),
    domain: h("input", { type: "text", name: "domain", value: e.domain ?? "", placeholder: "all domains" }),
    format: h("select", { name: "format" }, ["esp", "cloudevents"].map((f) => h("option", { value: f, selected: f === (e.format ?? "esp") }, f))),
    asymmetric: h("input", { type: "checkbox", name: "asymmetric", checked: !!e.asymmetric }),
  };
  const element = h("div", { class: "form-grid" },
    field("Name", inputs.name),
    field("URL", inputs.url),
    field("Event types", inputs.events, "comma-separated patterns: message.received, message.*, *"),
    field("Mail domain", inputs.domain, "only events of this domain (optional)"),
    field("Format", inputs.format),
    field("Also sign with Ed25519 (v1a)", inputs.asymmetric));
  const read = () => ({
    name: inputs.name.value.trim(),
    url: inputs.url.value.trim(),
    events: inputs.events.value.split(",").map((s) => s.trim()).filter(Boolean),
    domain: inputs.domain.value.trim() || null,
    format: inputs.format.value,
    asymmetric: inputs.asymmetric.checked,
  });
  return { element, read };
}

async function list(root, ctx) {
  const status = h("div", { class: "status" });
  const shown = h("div", { class: "secret-slot" });
  const rows = h("div");
  const form = endpointFields();
  const create = h("form", { class: "card", "aria-labelledby": "new-endpoint" },
    h("h2", { id: "new-endpoint" }, "New endpoint"), form.element, status,
    h("button", { type: "submit", class: "primary" }, "Create endpoint"));
  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = form.read();
    if (!body.domain) delete body.domain;
    try {
      const made = await post("/v1/webhooks", body);
      say(status, `Created ${made.name}.`);
      clear(shown, secretBox(made.secret), h("p", {}, h("a", { href: `#/webhooks/${encodeURIComponent(made.id)}` }, `Open ${made.name}`)));
      create.reset();
      await load();
    } catch (error) {
      say(status, error);
    }
  });
  clear(root, h("h1", {}, "Webhooks"), shown, h("section", { class: "card", "aria-label": "Endpoints" }, h("h2", {}, "Endpoints"), rows), create);
  const load = async () => {
    const { webhooks } = await get("/v1/webhooks");
    clear(rows, table(["Name", "URL", "Events", "State", "Failures", "Last triggered"],
      webhooks.map((e) => h("tr", {},
        h("td", {}, h("a", { href: `#/webhooks/${encodeURIComponent(e.id)}` }, e.name)),
        h("td", { class: "mono wrap" }, e.url),
        h("td", {}, e.events.join(", ")),
        h("td", {}, e.enabled ? badge("enabled", "ok") : badge(`disabled: ${e.disabled_reason || "operator"}`, "bad")),
        h("td", { class: "num" }, number(e.failure_count)),
        h("td", {}, time(e.last_triggered_at)))),
      "No endpoints yet: create one below."));
  };
  await load();
}

async function endpoint(root, ctx, id) {
  const path = `/v1/webhooks/${encodeURIComponent(id)}`;
  let e = await get(path);
  const status = h("div", { class: "status" });
  const shown = h("div", { class: "secret-slot" });
  const head = h("div");
  const deliveries = h("div");
  const act = (label, fn, kind = "") => action(label, fn, status, { class: kind });
  const refresh = async () => {
    e = await get(path);
    drawHead();
  };
  const drawHead = () => clear(head,
    h("p", {}, h("a", { href: "#/webhooks" }, "← All endpoints")),
    h("h1", {}, e.name, " ", e.enabled ? badge("enabled", "ok") : badge(`disabled: ${e.disabled_reason || "operator"}`, "bad")),
    h("dl", { class: "facts" },
      h("dt", {}, "URL"), h("dd", { class: "mono wrap" }, e.url),
      h("dt", {}, "Events"), h("dd", {}, e.events.join(", ")),
      h("dt", {}, "Domain"), h("dd", {}, e.domain || "all"),
      h("dt", {}, "Format"), h("dd", {}, e.format),
      h("dt", {}, "Failures in a row"), h("dd", {}, number(e.failure_count)),
      h("dt", {}, "Secret"), h("dd", {}, e.rotating ? "rotating (the previous one still signs)" : "current"),
      e.public_key ? [h("dt", {}, "Public key"), h("dd", { class: "mono wrap" }, e.public_key)] : null,
      h("dt", {}, "Id"), h("dd", { class: "mono" }, e.id)),
    h("div", { class: "actions" },
      e.enabled
        ? act("Disable", async () => { await post(`${path}/disable`); say(status, "Disabled."); await refresh(); })
        : act("Enable", async () => { await post(`${path}/enable`); say(status, "Enabled."); await refresh(); }),
      act("Send test", async () => {
        const d = await post(`${path}/test`);
        say(status, `Test sent: delivery ${d.id}, ${d.status}.`);
        await loadDeliveries();
      }),
      act("Rotate secret", async () => {
        if (!confirm("Rotate the signing secret? The old one keeps signing for the overlap.")) return;
        const made = await post(`${path}/rotate-secret`);
        clear(shown, secretBox(made.secret, "New signing secret"));
        await refresh();
      }),
      act("Delete", async () => {
        if (!confirm(`Delete ${e.name}? Its pending deliveries go with it.`)) return;
        await api("DELETE", path);
        ctx.toast(`Deleted ${e.name}.`);
        ctx.go("#/webhooks");
      }, "danger")));

  // Edit
  const form = endpointFields(e);
  const edit = h("form", { class: "card", "aria-labelledby": "edit-title" }, h("h2", { id: "edit-title" }, "Edit"), form.element,
    h("button", { type: "submit", class: "primary" }, "Save"));
  edit.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      e = await api("PATCH", path, form.read());
      say(status, "Saved.");
      drawHead();
    } catch (error) {
      say(status, error);
    }
  });

  // Replay
  const since = h("input", { type: "datetime-local", name: "since", step: 1, required: true });
  since.value = localInput(new Date(Date.now() - 3600_000));
  const replay = h("form", { class: "card inline", "aria-labelledby": "replay-title" },
    h("h2", { id: "replay-title" }, "Replay failed deliveries"), field("Since", since),
    h("button", { type: "submit" }, "Replay"));
  replay.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await post(`${path}/replay${query({ since: new Date(since.value).toISOString() })}`);
      say(status, `${r.replayed} failed deliveries sent again.`);
      await loadDeliveries();
    } catch (error) {
      say(status, error);
    }
  });

  // Deliveries, newest first, 50 a page; the 5 s refresh re-reads the page shown.
  const filter = h("select", { name: "status", id: "delivery-status" },
    ["", "pending", "succeeded", "failed"].map((s) => h("option", { value: s }, s || "any status")));
  const pages = h("div", { class: "row" });
  const loadDeliveries = pager(pages, async (cursor) => {
    const r = await get(`${path}/deliveries${query({ status: filter.value, limit: 50, cursor })}`);
    clear(deliveries, table(["Delivery", "Event", "Status", "Attempts", "Last answer", "Updated"],
      r.deliveries.map((d) => h("tr", {},
        h("td", {}, h("a", { href: `#/deliveries/${encodeURIComponent(d.id)}`, class: "mono" }, d.id.slice(0, 18))),
        h("td", {}, d.event_type),
        h("td", {}, deliveryBadge(d.status)),
        h("td", { class: "num" }, d.attempts),
        h("td", {}, d.last_status_code ?? "", d.last_error ? h("span", { class: "error" }, ` ${d.last_error}`) : ""),
        h("td", {}, time(d.updated_at)))),
      "No deliveries with this status."));
    return r;
  }, status);
  filter.addEventListener("change", () => loadDeliveries.reset().catch((e) => say(status, e)));
  drawHead();
  clear(root, head, shown, status,
    h("section", { class: "card", "aria-labelledby": "deliveries-title" },
      h("div", { class: "row spread" }, h("h2", { id: "deliveries-title" }, "Deliveries"),
        h("label", { for: "delivery-status", class: "sr-only" }, "Status"), filter,
        h("button", { type: "button", onclick: () => loadDeliveries() }, "Refresh")),
      deliveries, pages),
    h("div", { class: "grid2" }, edit, replay));
  await loadDeliveries();
  const timer = setInterval(() => loadDeliveries().catch(() => {}), 5000);
  return () => clearInterval(timer);
}

export function deliveryBadge(status) {
  return badge(status, { succeeded: "ok", failed: "bad", pending: "warn" }[status] || "");
}

function localInput(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
