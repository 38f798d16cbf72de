// Audit: search by type pattern, actor, resource and time, paged; verify the chains
// (GET /v1/audit/verify) with its result; export every matching row as JSON lines,
// as `evhost audit export` does.
// #/audit/event/<id> opens the search on one event.

import { get, query } from "../api.js";
import { clear, download, field, h, json, pager, say, table, time } from "../dom.js";

export async function render(root, ctx) {
  const inputs = {
    types: h("input", { type: "text", name: "types", placeholder: "message.*,plugin.*" }),
    actor: h("input", { type: "text", name: "actor", placeholder: "token name, user or evhost" }),
    resource_type: h("input", { type: "text", name: "resource_type", placeholder: "webhook" }),
    resource_id: h("input", { type: "text", name: "resource_id" }),
    since: h("input", { type: "datetime-local", name: "since", step: 1 }),
    until: h("input", { type: "datetime-local", name: "until", step: 1 }),
    event_id: h("input", { type: "text", name: "event_id" }),
  };
  if (ctx.args[0] === "event" && ctx.args[1]) inputs.event_id.value = ctx.args[1];
  const status = h("div", { class: "status", id: "audit-status" });
  const verified = h("div", { id: "verify-result", "aria-live": "polite" });
  const results = h("div", { id: "audit-rows" });
  const detail = h("section", { class: "card", "aria-label": "Row", id: "audit-row", tabindex: "-1", hidden: true });
  const pages = h("div", { class: "row" });

  const filter = () => {
    const f = {};
    for (const [k, input] of Object.entries(inputs)) {
      const v = input.value.trim();
      if (!v) continue;
      f[k] = input.type === "datetime-local" ? new Date(v).toISOString() : v;
    }
    return f;
  };
  const load = pager(pages, async (cursor, page) => {
    const r = await get(`/v1/audit${query({ ...filter(), limit: 50, cursor })}`);
    say(status, `Page ${page + 1}: ${r.rows.length} ${r.rows.length === 1 ? "row" : "rows"}${r.next_cursor ? ", more follow" : ""}.`);
    clear(results, table(["Time", "Type", "Actor", "Resource", "Event"], r.rows.map((row) => h("tr", {},
      h("td", {}, time(row.time)),
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => showRow(row) }, row.event_type)),
      h("td", {}, row.actor ?? "—", row.actor_ip ? h("small", { class: "muted" }, ` ${row.actor_ip}`) : ""),
      h("td", {}, row.resource_type ? `${row.resource_type}:${row.resource_id ?? ""}` : "—"),
      h("td", { class: "mono wrap" }, row.event_id))), "No row matches."));
    return r;
  }, status);

  const showRow = (row) => {
    detail.hidden = false;
    clear(detail, h("div", { class: "row spread" }, h("h2", {}, `Row ${row.seq}: ${row.event_type}`),
      h("button", { type: "button", onclick: () => (detail.hidden = true) }, "Close")), json(row));
    detail.scrollIntoView({ block: "nearest" });
    detail.focus();
  };

  const form = h("form", { class: "card", "aria-labelledby": "search-title" },
    h("h2", { id: "search-title" }, "Search"),
    h("div", { class: "form-grid" },
      field("Types", inputs.types, "comma-separated patterns"), field("Actor", inputs.actor),
      field("Resource type", inputs.resource_type), field("Resource id", inputs.resource_id),
      field("From", inputs.since), field("Until", inputs.until), field("Event id", inputs.event_id)),
    h("div", { class: "row" },
      h("button", { type: "submit", class: "primary" }, "Search"),
      h("button", { type: "button", id: "verify", onclick: verify }, "Verify the log"),
      h("button", { type: "button", id: "export", onclick: exportRows }, "Export (JSON lines)")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load.reset().catch((error) => say(status, error));
  });

  async function verify() {
    clear(verified, h("span", { role: "status" }, "Verifying every chain…"));
    try {
      const r = await get("/v1/audit/verify");
      clear(verified, r.ok
        ? h("p", { class: "ok-text", role: "status" }, `Verified: ${r.rows} rows in ${r.chains} hash ${r.chains === 1 ? "chain" : "chains"}, every link intact.`)
        : h("div", { class: "error", role: "alert" }, h("p", {}, "The audit log does not verify:"), json(r)));
    } catch (e) {
      say(verified, e);
    }
  }

  async function exportRows() {
    const lines = [];
    let cursor;
    try {
      for (;;) {
        const r = await get(`/v1/audit${query({ ...filter(), limit: 1000, cursor })}`);
        for (const row of r.rows) lines.push(JSON.stringify(row));
        say(status, `Exporting: ${lines.length} rows…`);
        if (!r.next_cursor) break;
        cursor = r.next_cursor;
      }
      download(`evhost-audit-${new Date().toISOString().replace(/[:.]/g, "-")}.jsonl`, lines.map((l) => `${l}\n`).join(""), "application/x-ndjson");
      say(status, `Exported ${lines.length} rows.`);
    } catch (e) {
      say(status, e);
    }
  }

  clear(root, h("h1", {}, "Audit"), form, verified, detail,
    h("section", { class: "card", "aria-label": "Rows" }, status, results, pages));
  await load(0).catch((e) => say(status, e));
}
