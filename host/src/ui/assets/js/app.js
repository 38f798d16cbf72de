// The console's shell: the sign-in, the page router (#/page/arg) and the toast.
// Each page is a module with render(root, ctx) that may return a cleanup function
// (live tails and timers stop when the page is left).

import { api, ApiError, setToken, token } from "./api.js";
import { clear, h } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as live from "./pages/live.js";
import * as webhooks from "./pages/webhooks.js";
import * as deliveries from "./pages/deliveries.js";
import * as plugins from "./pages/plugins.js";
import * as audit from "./pages/audit.js";
import * as catalog from "./pages/catalog.js";

const pages = {
  overview: { module: overview, title: "Overview" },
  live: { module: live, title: "Live events" },
  webhooks: { module: webhooks, title: "Webhooks" },
  deliveries: { module: deliveries, title: "Delivery", nav: "webhooks" },
  plugins: { module: plugins, title: "Plugins" },
  audit: { module: audit, title: "Audit" },
  catalog: { module: catalog, title: "Catalog" },
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let me = null;
let cleanup = null;

export function toast(message, kind = "ok") {
  const el = document.getElementById("toast");
  clear(el, h("div", { class: `toast-item ${kind}` }, message));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => clear(el), 6000);
}

function can(scope) {
  return !!me && me.scopes.includes(scope);
}

function leave() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
}

async function route() {
  leave();
  if (!me) return signIn();
  const [name = "overview", ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = pages[name] || pages.overview;
  for (const a of nav.querySelectorAll("a")) {
    const current = a.getAttribute("href") === `#/${page.nav || name}`;
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${page.title} · evhost`;
  const root = clear(main);
  const ctx = { me, can, args, toast, go: (hash) => (location.hash = hash) };
  try {
    cleanup = await page.module.render(root, ctx);
  } catch (e) {
    clear(root, h("h1", {}, page.title), h("p", { class: "error", role: "alert" }, e.message));
  }
}

function showWho() {
  nav.hidden = false;
  const label = me.open ? "open API (no token configured)" : `token ${me.token}`;
  clear(
    who,
    h("span", { class: "muted", title: `scopes: ${me.scopes.join(", ")}` }, label),
    " ",
    me.scopes.map((s) => h("span", { class: "badge scope" }, s)),
    me.open ? null : h("button", { type: "button", class: "link", id: "sign-out", onclick: signOut }, "Sign out"),
  );
}

function signOut() {
  setToken("");
  me = null;
  clear(who);
  nav.hidden = true;
  route();
}

function signIn(message) {
  nav.hidden = true;
  const input = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "off", required: true,
    placeholder: "the API token", "aria-describedby": "signin-help",
  });
  const status = h("p", { class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to evhost"),
    h("p", { id: "signin-help", class: "muted" },
      "Type an API token (auth.tokens or EVHOST_API_TOKEN). It stays in this tab only, and every action uses the token's scopes, as curl would."),
    h("label", { for: "token" }, "Token"),
    input,
    status,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    await start(true);
  });
  clear(main, form);
  input.focus();
}

async function start(typed = false) {
  // The daemon writes into the page whether its API needs a token: without one
  // typed in, ask for it rather than send a request bound to be refused.
  if (!token() && document.documentElement.dataset.auth !== "open") return signIn("");
  try {
    me = await api("GET", "/v1/me");
  } catch (e) {
    me = null;
    if (e instanceof ApiError && e.status === 401) {
      setToken("");
      return signIn(typed ? "That token is not valid." : "");
    }
    return clear(main, h("h1", {}, "evhost"), h("p", { class: "error", role: "alert" }, e.message));
  }
  showWho();
  if (!location.hash || location.hash === "#") location.hash = "#/overview";
  else route();
}

window.addEventListener("hashchange", () => route());
window.addEventListener("evhost:unauthorized", () => {
  if (me && !me.open) {
    me = null;
    setToken("");
    clear(who);
    route();
  }
});
start(!!token());
