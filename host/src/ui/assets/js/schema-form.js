// A form generated from an event type's JSON Schema (GET /v1/event-types), and an
// example payload made from the same schema. The API validates what is sent; its
// error, naming the field, is shown beside the form.

import { field, h } from "./dom.js";

/// The schema with `$ref`s into its `$defs`/`definitions` followed, and a nullable
/// type (`["string", "null"]`) read as its non-null type.
function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 8; i++) {
    const name = s.$ref.split("/").pop();
    s = (root.$defs || root.definitions || {})[name] || {};
  }
  if (s.anyOf || s.oneOf) {
    const choices = (s.anyOf || s.oneOf).filter((c) => c.type !== "null");
    if (choices.length === 1) return resolve(choices[0], root);
  }
  let type = s.type;
  if (Array.isArray(type)) type = type.find((t) => t !== "null") || "string";
  return { ...s, type };
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/// A plausible value of `name` for `schema`: the schema decides the kind, the name
/// the flavour (an address for `from`, a domain for `domain`).
export function example(schema, root = schema, name = "") {
  const s = resolve(schema, root);
  if (s.examples && s.examples.length) return s.examples[0];
  if (s.default !== undefined) return s.default;
  if (s.enum) return s.enum[0];
  if (s.const !== undefined) return s.const;
  const n = name.toLowerCase();
  switch (s.type) {
    case "object": {
      const out = {};
      for (const [key, sub] of Object.entries(s.properties || {})) {
        if ((s.required || []).includes(key)) out[key] = example(sub, root, key);
      }
      return out;
    }
    case "array":
      return [example(s.items || { type: "string" }, root, n.replace(/s$/, ""))];
    case "integer": {
      const min = s.minimum ?? 0;
      return Math.max(min, n.includes("size") ? 2048 : 1);
    }
    case "number":
      return n.includes("score") ? 2.5 : Math.max(s.minimum ?? 0, 1.5);
    case "boolean":
      return false;
    default:
      if (s.format === "date-time") return new Date().toISOString();
      if (s.format === "uuid") return uuid();
      if (s.format === "email" || /^(from|to|email|user|sender|recipient|address)$/.test(n)) return "alice@example.com";
      if (n.includes("domain")) return "example.com";
      if (n === "ip" || n.endsWith("_ip")) return "192.0.2.10";
      if (n.includes("protocol")) return "imap";
      if (n.endsWith("_id") || n === "id") return `${n.replace(/_id$/, "")}-${Math.floor(Math.random() * 1e6)}`;
      return `example ${n.replace(/_/g, " ")}`.trim();
  }
}

/// Form fields for an object schema; returns { element, collect() } where collect()
/// gives the payload (optional fields only when filled in) or throws with the field.
export function schemaForm(schema) {
  const root = schema;
  const s = resolve(schema, root);
  const required = new Set(s.required || []);
  const readers = [];
  const element = h("div", { class: "schema-form" });
  for (const [name, raw] of Object.entries(s.properties || {})) {
    const sub = resolve(raw, root);
    const must = required.has(name);
    const start = must ? example(raw, root, name) : undefined;
    const label = `${name}${must ? " *" : ""}`;
    const hint = [sub.type === "array" ? "comma-separated" : sub.format || sub.type, sub.description]
      .filter(Boolean).join(" · ");
    let input;
    let read;
    if (sub.enum) {
      input = h("select", { name }, must ? null : h("option", { value: "" }, "(none)"),
        sub.enum.map((v) => h("option", { value: v, selected: v === start }, v)));
      read = () => input.value || undefined;
    } else if (sub.type === "boolean") {
      input = h("input", { type: "checkbox", name, checked: !!start });
      read = () => input.checked;
    } else if (sub.type === "integer" || sub.type === "number") {
      input = h("input", { type: "number", name, step: sub.type === "integer" ? "1" : "any", value: start ?? "" });
      read = () => (input.value === "" ? undefined : Number(input.value));
    } else if (sub.type === "array" && resolve(sub.items, root).type === "string") {
      input = h("input", { type: "text", name, value: (start || []).join(", ") });
      read = () => {
        const items = input.value.split(",").map((v) => v.trim()).filter(Boolean);
        return items.length || must ? items : undefined;
      };
    } else if (sub.type === "object" || sub.type === "array" || !sub.type) {
      input = h("textarea", { name, rows: 3, spellcheck: "false" }, start === undefined ? "" : JSON.stringify(start, null, 2));
      read = () => {
        if (!input.value.trim()) return undefined;
        try {
          return JSON.parse(input.value);
        } catch (e) {
          throw Object.assign(new Error(`${name}: not valid JSON (${e.message})`), { field: name });
        }
      };
    } else {
      input = h("input", { type: "text", name, value: start ?? "", autocomplete: "off", spellcheck: "false" });
      read = () => (input.value === "" && !must ? undefined : input.value);
    }
    input.dataset.field = name;
    element.append(field(label, input, hint));
    readers.push([name, read]);
  }
  const collect = () => {
    const out = {};
    for (const [name, read] of readers) {
      const v = read();
      if (v !== undefined) out[name] = v;
    }
    return out;
  };
  return { element, collect };
}
