// Small DOM helpers: elements are built with h(), never from HTML strings, so no
// value from the API can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// A time as the browser's locale shows it, with the full RFC 3339 time on hover.
export function time(value) {
  if (!value) return h("span", { class: "muted" }, "—");
  const d = new Date(value);
  return h("time", { datetime: value, title: value }, d.toLocaleString());
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

/// A status line for a section: `say(el, "…")` or `say(el, error)`.
export function say(el, what) {
  if (what instanceof Error) {
    clear(el, h("span", { class: "error", role: "alert" }, what.message));
  } else {
    clear(el, what ? h("span", { role: "status" }, what) : "");
  }
}

export function table(headers, rows, empty = "Nothing here yet.") {
  if (rows.length === 0) return h("p", { class: "muted empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("small", { class: "muted" }, hint) : null,
  );
}

/// Offers `text` as a file download (made in the page: nothing leaves the browser).
export function download(name, text, type = "application/json") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function number(n, digits = 0) {
  return Number(n || 0).toLocaleString(undefined, {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/// A button that runs `run`; a failure is said in `status`.
export function action(label, run, status, attrs = {}) {
  const onclick = async () => {
    try {
      await run();
    } catch (e) {
      say(status, e);
    }
  };
  return h("button", { type: "button", ...attrs, onclick }, label);
}

/// The pages of a list route with cursors: `load(n)` calls `fetchPage(cursor, n)`,
/// which draws page n and returns the answer, then puts Newer/Older buttons into
/// `el`. `load()` reloads the page shown; `load.reset()` goes back to the first.
export function pager(el, fetchPage, status) {
  let cursors = [null];
  let shown = 0;
  const load = async (page = shown) => {
    const r = await fetchPage(cursors[page], page);
    shown = page;
    cursors = cursors.slice(0, page + 1);
    if (r.next_cursor) cursors.push(r.next_cursor);
    clear(el,
      page > 0 ? action("Newer", () => load(page - 1), status) : null,
      r.next_cursor ? action("Older", () => load(page + 1), status) : null);
    return r;
  };
  load.reset = () => {
    cursors = [null];
    return load(0);
  };
  return load;
}
