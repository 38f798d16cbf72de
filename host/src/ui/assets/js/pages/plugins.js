// Plugins: each plugin's state, version, calls and errors by kind, its last error,
// the breaker, reload; for a shadow, how it compares with the version it runs
// beside, and promote.

import { get, post } from "../api.js";
import { action, badge, clear, h, json, number, say, table, time } from "../dom.js";

const KINDS = ["timeout", "memory", "trap", "error", "invalid_action"];

export async function render(root, ctx) {
  const status = h("div", { class: "status" });
  const body = h("div");
  clear(root, h("h1", {}, "Plugins"), status, body);
  const act = (label, fn, attrs = {}) => action(label, async () => {
    await fn();
    await draw();
  }, status, attrs);
  const draw = async () => {
    const { plugins } = await get("/v1/plugins");
    if (!plugins.length) {
      clear(body, h("p", { class: "muted empty" }, "No plugins: drop a .wasm component (and its .toml sidecar) into the plugin folder; it goes live without a restart."));
      return;
    }
    const shadows = await Promise.all(plugins.filter((p) => p.state === "shadow")
      .map((p) => get(`/v1/plugins/${encodeURIComponent(p.name)}/shadow`).catch((e) => ({ name: p.name, error: e.message }))));
    clear(body, plugins.map((p) => h("section", { class: "card plugin", "aria-label": `Plugin ${p.name}`, dataset: { plugin: p.name } },
      h("div", { class: "row spread" },
        h("h2", {}, p.name, " ", badge(p.state, { serving: "ok", shadow: "warn", breaker_open: "bad", failed: "bad" }[p.state])),
        ctx.can("admin") ? act("Reload", async () => {
          const s = await post(`/v1/plugins/${encodeURIComponent(p.name)}/reload`);
          say(status, `Reloaded ${p.name}: ${s.state}, version ${s.version ?? "?"}.`);
        }, { class: "reload", "aria-label": `Reload ${p.name}` }) : null),
      h("dl", { class: "facts" },
        h("dt", {}, "Version"), h("dd", {}, `${p.plugin_name ?? "?"} ${p.version ?? ""}`),
        h("dt", {}, "Mode"), h("dd", {}, p.mode ?? "—", p.shadow_of ? ` beside ${p.shadow_of}` : ""),
        h("dt", {}, "Subscribes to"), h("dd", {}, (p.subscriptions || []).join(", ") || "—"),
        h("dt", {}, "Loaded"), h("dd", {}, time(p.loaded_at)),
        h("dt", {}, "Calls"), h("dd", {}, number(p.calls)),
        h("dt", {}, "Breaker"), h("dd", {}, p.state === "breaker_open" ? badge("open", "bad") : badge("closed", "ok"), ` ${p.failures_in_a_row} failures in a row`),
        h("dt", {}, "File"), h("dd", { class: "mono wrap" }, p.file, p.file_hash ? h("small", { class: "muted" }, ` sha256 ${p.file_hash.slice(0, 16)}…`) : "")),
      h("table", { class: "kinds" },
        h("caption", {}, "Errors by kind"),
        h("thead", {}, h("tr", {}, KINDS.map((k) => h("th", { scope: "col" }, k)))),
        h("tbody", {}, h("tr", {}, KINDS.map((k) => h("td", { class: "num" }, number((p.errors || {})[k])))))),
      p.last_error ? h("div", { class: "last-error", role: "note" }, h("strong", {}, "Last error "), time(p.last_error_at), h("pre", { class: "snippet error" }, p.last_error)) : null,
      (p.warnings || []).length ? h("ul", { class: "warnings" }, p.warnings.map((w) => h("li", {}, w))) : null,
      shadowView(shadows.find((s) => s.name === p.name), ctx, act))));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), 5000);
  return () => clearInterval(timer);
}

function shadowView(report, ctx, act) {
  if (!report) return null;
  if (report.error) return h("p", { class: "error" }, report.error);
  const r = report;
  return h("div", { class: "shadow" },
    h("h3", {}, `Shadow of ${r.shadow_of}: ${r.shadow_version} against ${r.serving_version ?? "nothing serving"}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Since"), h("dd", {}, time(r.since)),
      h("dt", {}, "Events"), h("dd", {}, `${number(r.events)}: ${number(r.same)} same, ${number(r.different)} different, ${number(r.skipped)} skipped`),
      h("dt", {}, "Errors"), h("dd", {}, Object.entries(r.errors || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none"),
      h("dt", {}, "Mean call"), h("dd", {}, `${r.serving_mean_us} µs serving, ${r.shadow_mean_us} µs shadow`)),
    table(["At", "Event", "Serving did", "Shadow did"], (r.latest_differences || []).map((d) => h("tr", {},
      h("td", {}, time(d.at)), h("td", {}, d.event_type, h("br"), h("span", { class: "mono" }, d.event_id)),
      h("td", {}, json(d.serving)), h("td", {}, json(d.shadow)))), "No differences so far."),
    ctx.can("admin") ? act("Promote", async () => {
      if (!confirm(`Make ${r.name} the serving version of ${r.shadow_of}?`)) return;
      await post(`/v1/plugins/${encodeURIComponent(r.name)}/promote`);
    }, { class: "primary" }) : null);
}
