// One delivery (#/deliveries/<id>): every attempt with its status, latency, error
// and the start of the receiver's answer; retry it now.

import { get, post } from "../api.js";
import { clear, h, number, say, table, time } from "../dom.js";
import { deliveryBadge } from "./webhooks.js";

export async function render(root, ctx) {
  const id = ctx.args[0];
  if (!ctx.can("admin")) {
    clear(root, h("h1", {}, "Delivery"), h("p", { class: "muted" }, "Deliveries need a token with the admin scope."));
    return;
  }
  const path = `/v1/deliveries/${encodeURIComponent(id)}`;
  const status = h("div", { class: "status" });
  const body = h("div");
  const draw = async () => {
    const d = await get(path);
    clear(body,
      h("p", {}, h("a", { href: `#/webhooks/${encodeURIComponent(d.webhook_id)}` }, "← The endpoint's deliveries")),
      h("h1", {}, "Delivery ", deliveryBadge(d.status)),
      h("dl", { class: "facts" },
        h("dt", {}, "Id (webhook-id)"), h("dd", { class: "mono" }, d.id),
        h("dt", {}, "Event"), h("dd", {}, d.event_type, " ", h("a", { href: `#/audit/event/${encodeURIComponent(d.event_id)}`, class: "mono" }, d.event_id)),
        h("dt", {}, "Attempts"), h("dd", {}, d.attempts),
        h("dt", {}, "Next attempt"), h("dd", {}, time(d.next_attempt_at)),
        h("dt", {}, "Created"), h("dd", {}, time(d.created_at))),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "retry", class: "primary", onclick: async () => {
            try {
              await post(`${path}/retry`);
              say(status, "Retry queued: the delivery is due now.");
              setTimeout(() => draw().catch((e) => say(status, e)), 1500);
            } catch (e) {
              say(status, e);
            }
          } }, "Retry now"),
        h("button", { type: "button", onclick: () => draw().catch((e) => say(status, e)) }, "Refresh")),
      h("section", { class: "card", "aria-labelledby": "attempts-title" },
        h("h2", { id: "attempts-title" }, "Attempts"),
        table(["#", "At", "Status", "Latency", "Error", "Answer (start)"],
          (d.attempt_log || []).map((a) => h("tr", { class: "attempt" },
            h("td", { class: "num" }, a.attempt),
            h("td", {}, time(a.at)),
            h("td", {}, a.status_code ?? "—"),
            h("td", { class: "num" }, `${number(a.latency_ms, 1)} ms`),
            h("td", { class: "error" }, a.error || ""),
            h("td", {}, a.response ? h("pre", { class: "snippet" }, a.response) : ""))),
          "No attempt yet.")));
  };
  clear(root, status, body);
  await draw();
}
