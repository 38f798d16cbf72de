// Overview: the last 15 minutes' rates, the log's lag, the audit log's health, the
// plugins, the webhook endpoints that are failing or disabled, and the nodes.

import { get } from "../api.js";
import { lineChart } from "../chart.js";
import { badge, clear, h, number, table, time } from "../dom.js";

const REFRESH_MS = 5000;

async function readyz() {
  // /readyz answers 503 with the same body when not ready; fetch it directly.
  const r = await fetch("/readyz", { cache: "no-store" });
  return r.json();
}

function settled(promise) {
  return promise.then((value) => ({ value }), (error) => ({ error }));
}

function card(title, ...body) {
  return h("section", { class: "card", "aria-label": title }, h("h2", {}, title), ...body);
}

function failedOr(result, show) {
  if (result.error) return h("p", { class: "muted" }, result.error.message);
  return show(result.value);
}

export async function render(root, ctx) {
  const body = h("div", { class: "overview" });
  clear(root, h("h1", {}, "Overview"), body);
  let stopped = false;
  const draw = async () => {
    const [rates, ready, plugins, hooks, nodes] = await Promise.all([
      settled(get("/v1/stats/rates")),
      settled(readyz()),
      settled(get("/v1/plugins")),
      ctx.can("admin") ? settled(get("/v1/webhooks")) : Promise.resolve(null),
      settled(get("/v1/nodes")),
    ]);
    if (stopped) return;
    const charts = failedOr(rates, (r) => {
      const series = (key) => r.points.map((p) => ({ t: new Date(p.time), v: p[key] }));
      const now = (key) => (r.points.length ? r.points[r.points.length - 1][key] : 0);
      const chart = (title, key, kind) =>
        h("figure", { class: "chart-box" },
          h("figcaption", {}, title, h("strong", { class: "rate" }, `${number(now(key), 1)}/s`)),
          lineChart(title, series(key), { span: r.span_seconds, kind }));
      return h("div", { class: "charts" },
        chart("Accepted events", "accepted", "ok"),
        chart("Delivered webhooks", "delivered", "ok"),
        chart("Failed attempts", "failed", "bad"),
        chart("Refused at ingest", "rejected", "warn"));
    });
    const health = failedOr(ready, (r) => h("dl", { class: "facts" },
      h("dt", {}, "State"), h("dd", {}, badge(r.status, r.status === "ready" ? "ok" : "bad")),
      h("dt", {}, "Log lag"), h("dd", {}, `${number(r.lag.events)} events (${number(r.lag.bytes / 1024, 1)} KiB) of ${number(r.lag.max_events)}`),
      h("dt", {}, "Audit log"), h("dd", {}, badge(r.audit.healthy ? "healthy" : "failing", r.audit.healthy ? "ok" : "bad"),
        ` backlog ${number(r.audit.backlog)} of ${number(r.audit.backlog_capacity)}`),
      r.failed_task ? [h("dt", {}, "Failed task"), h("dd", { class: "error" }, `${r.failed_task.task}: ${r.failed_task.reason}`)] : null));
    const pluginList = failedOr(plugins, (p) => table(
      ["Plugin", "State", "Calls", "Errors"],
      p.plugins.map((x) => h("tr", {},
        h("td", {}, h("a", { href: "#/plugins" }, x.name)),
        h("td", {}, badge(x.state, x.state === "serving" ? "ok" : "bad")),
        h("td", { class: "num" }, number(x.calls)),
        h("td", { class: "num" }, number(Object.values(x.errors || {}).reduce((a, b) => a + b, 0))))),
      "No plugins loaded: drop a .wasm file into the plugin folder."));
    let endpointList;
    if (!hooks) endpointList = h("p", { class: "muted" }, "Webhook endpoints need a token with the admin scope.");
    else endpointList = failedOr(hooks, (w) => {
      const troubled = w.webhooks.filter((e) => !e.enabled || e.failure_count > 0);
      return h("div", {},
        h("p", { class: "muted" }, `${w.webhooks.length} ${w.webhooks.length === 1 ? "endpoint" : "endpoints"}, ${troubled.length} failing or disabled.`),
        table(["Endpoint", "State", "Failures in a row"], troubled.map((e) => h("tr", {},
          h("td", {}, h("a", { href: `#/webhooks/${encodeURIComponent(e.id)}` }, e.name)),
          h("td", {}, e.enabled ? badge("failing", "warn") : badge(`disabled: ${e.disabled_reason || "operator"}`, "bad")),
          h("td", { class: "num" }, number(e.failure_count)))), "Every endpoint is delivering."));
    });
    const nodeList = failedOr(nodes, (n) => table(
      ["Node", "State", "Host", "Version", "Heartbeat", "Undispatched"],
      n.nodes.map((x) => h("tr", {},
        h("td", {}, x.node, x.node === n.this_node ? h("span", { class: "muted" }, " (this one)") : null),
        h("td", {}, badge(x.state, x.state === "running" ? "ok" : "warn")),
        h("td", {}, x.hostname), h("td", {}, x.version), h("td", {}, time(x.last_heartbeat)),
        h("td", { class: "num" }, number(x.undispatched_rows))))));
    clear(body,
      card("Rates, last 15 minutes", charts),
      h("div", { class: "grid2" }, card("Health", health), card("Plugins", pluginList)),
      h("div", { class: "grid2" }, card("Webhook endpoints", endpointList), card("Nodes", nodeList)));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
