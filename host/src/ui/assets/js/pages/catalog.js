// Catalog: every event type with its description, its JSON Schema and an example
// payload made from that schema (#/catalog/<type>).

import { get } from "../api.js";
import { clear, h, json } from "../dom.js";
import { example } from "../schema-form.js";

export async function render(root, ctx) {
  const { event_types } = await get("/v1/event-types");
  const chosen = event_types.find((t) => t.name === ctx.args[0]);
  const list = h("ul", { class: "type-list" }, event_types.map((t) => h("li", {},
    h("a", { href: `#/catalog/${encodeURIComponent(t.name)}`, "aria-current": t === chosen ? "page" : false }, t.name),
    h("span", { class: "muted" }, ` ${t.description}`))));
  const detail = chosen
    ? h("section", { class: "card", "aria-label": chosen.name },
      h("h2", {}, chosen.name), h("p", {}, chosen.description),
      ctx.can("publish") ? h("p", {}, h("a", { href: `#/live/${encodeURIComponent(chosen.name)}` }, "Send one as a test event")) : null,
      h("h3", {}, "Example"), json({ type: chosen.name, data: example(chosen.schema) }),
      h("h3", {}, "JSON Schema"), json(chosen.schema))
    : h("section", { class: "card" }, h("p", { class: "muted" }, `${event_types.length} types. Choose one to see its schema and an example.`));
  clear(root, h("h1", {}, "Catalog"), h("div", { class: "live" }, h("section", { class: "card", "aria-label": "Types" }, list), detail));
}
