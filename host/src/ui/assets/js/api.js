// The console's only way to the daemon: the documented JSON API, on this origin,
// with the token the operator typed in (kept in this tab's sessionStorage, so it
// is typed once per tab and gone when the tab closes).

const KEY = "evhost.token";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function token() {
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/// Calls the API; the parsed JSON answer, or an ApiError with the API's code and message.
export async function api(method, path, body) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", `The daemon did not answer (${e.message}).`);
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  if (!response.ok) {
    const e = parsed && parsed.error ? parsed.error : {};
    const error = new ApiError(
      response.status,
      e.code || `http_${response.status}`,
      e.message || `${method} ${path} answered ${response.status}`,
      e.field,
    );
    if (response.status === 401) window.dispatchEvent(new CustomEvent("evhost:unauthorized"));
    throw error;
  }
  return parsed;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/// Reads the live tail (Server-Sent Events over fetch, since EventSource cannot send
/// a token) until `signal` aborts. Calls onEvent(name, data) per SSE event.
export async function tail(types, onEvent, signal) {
  const response = await fetch(`/v1/events/stream${query({ types })}`, {
    headers: headers({ Accept: "text/event-stream" }),
    signal,
    cache: "no-store",
  });
  if (!response.ok) {
    let e = {};
    try {
      e = (await response.json()).error || {};
    } catch {}
    throw new ApiError(response.status, e.code, e.message || `the tail answered ${response.status}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
