// Live events: the tail (GET /v1/events/stream) with a type filter, pause and the
// full JSON of any event; and a test event form made from the catalog's schema of
// the chosen type (POST /v1/events, publish scope).

import { get, post, tail } from "../api.js";
import { clear, field, h, json, say } from "../dom.js";
import { schemaForm } from "../schema-form.js";

const KEEP = 200;

export async function render(root, ctx) {
  const events = [];
  let paused = false;
  let missed = 0;
  let controller = null;
  const status = h("div", { class: "status", id: "tail-status" });
  const list = h("ol", { class: "events", id: "events", "aria-label": "Events, newest first" });
  const detail = h("div", { class: "event-detail", id: "event-detail" }, h("p", { class: "muted" }, "Choose an event to see its JSON."));
  const types = h("input", { type: "text", name: "types", id: "tail-types", value: "*", placeholder: "message.*,user.login" });
  const pause = h("button", { type: "button", id: "pause", "aria-pressed": "false" }, "Pause");

  const show = (event) => clear(detail, h("h3", {}, event.type), json(event));
  const draw = () => {
    clear(list, events.map((e, i) => h("li", {},
      h("button", { type: "button", class: "event-row", dataset: { type: e.type }, onclick: () => show(events[i]) },
        h("span", { class: "type" }, e.type),
        h("span", { class: "mono muted" }, e.id),
        h("time", { datetime: e.time }, new Date(e.time).toLocaleTimeString())))));
  };
  const start = () => {
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    say(status, `Watching ${types.value || "*"}.`);
    tail(types.value || "*", (name, data) => {
      if (name === "lagged") {
        missed += JSON.parse(data).missed;
        say(status, `Fell behind: ${missed} events skipped.`);
        return;
      }
      if (paused) return;
      events.unshift(JSON.parse(data));
      events.length = Math.min(events.length, KEEP);
      draw();
    }, signal).then(() => {
      if (!signal.aborted) say(status, "The tail ended (the daemon is stopping?). Reload the page to watch again.");
    }, (e) => {
      if (!signal.aborted) say(status, e);
    });
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    say(status, paused ? "Paused: new events are not shown." : `Watching ${types.value || "*"}.`);
  });
  const filter = h("form", { class: "row", "aria-label": "Filter" }, field("Types", types), h("button", { type: "submit" }, "Apply"), pause,
    h("button", { type: "button", onclick: () => { events.length = 0; draw(); } }, "Clear"));
  filter.addEventListener("submit", (e) => {
    e.preventDefault();
    events.length = 0;
    draw();
    start();
  });

  clear(root, h("h1", {}, "Live events"),
    h("div", { class: "live" },
      h("section", { class: "card", "aria-label": "Tail" }, filter, status, list),
      h("section", { class: "card", "aria-label": "Event" }, detail)),
    ctx.can("publish") ? await testForm(ctx) : h("p", { class: "muted" }, "Sending test events needs a token with the publish scope."));
  start();
  return () => controller && controller.abort();
}

async function testForm(ctx) {
  const { event_types } = await get("/v1/event-types");
  const chosen = event_types.find((t) => t.name === ctx.args[0]) || event_types.find((t) => t.name === "message.received") || event_types[0];
  const select = h("select", { name: "type", id: "test-type" }, event_types.map((t) => h("option", { value: t.name, selected: t === chosen }, t.name)));
  const description = h("p", { class: "muted" });
  const slot = h("div");
  const status = h("div", { class: "status", id: "test-status" });
  let form;
  const build = () => {
    const t = event_types.find((x) => x.name === select.value);
    description.textContent = t.description;
    form = schemaForm(t.schema);
    clear(slot, form.element);
  };
  select.addEventListener("change", build);
  build();
  const el = h("form", { class: "card", id: "test-event", "aria-labelledby": "test-title" },
    h("h2", { id: "test-title" }, "Send a test event"), field("Type", select), description, slot, status,
    h("button", { type: "submit", class: "primary" }, "Send"));
  el.addEventListener("submit", async (e) => {
    e.preventDefault();
    for (const bad of el.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
    try {
      const data = form.collect();
      const accepted = await post("/v1/events", { type: select.value, data });
      say(status, `Accepted: ${accepted.id}`);
    } catch (error) {
      const name = (error.field || "").replace(/^data\.?/, "").split(/[.[]/)[0];
      const input = name && el.querySelector(`[data-field="${CSS.escape(name)}"]`);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
      say(status, error);
    }
  });
  return el;
}
