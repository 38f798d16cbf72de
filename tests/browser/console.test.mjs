// The operator's console in a real Chromium: sign in, webhooks end to end, the test
// event form and the live tail, a failing receiver and a retry, a failing plugin and
// a reload, the audit search, verify and export, a read-only token, a phone's width,
// the keyboard and dark mode. Each test saves a screenshot. Across every test, no
// request leaves the daemon's origin.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";

import { launchChromium, screenshotPath, signedWith, startDaemon, startReceiver, TOKENS, until } from "./support.mjs";

let daemon;
let receiver;
let browser;
let page;
const requests = [];
const shared = {};

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  context.on("request", (r) => requests.push(r.url()));
  const p = await context.newPage();
  p.on("dialog", (d) => d.accept());
  p.on("pageerror", (e) => assert.fail(`script error on the page: ${e.message}`));
  return p;
}

async function signIn(p, token) {
  await p.goto(`${daemon.origin}/ui/`);
  await p.fill("#token", token);
  await p.press("#token", "Enter");
  await p.waitForSelector("#nav:not([hidden])");
}

async function shot(p, name) {
  await p.screenshot({ path: screenshotPath(name), fullPage: true });
}

before(async () => {
  daemon = await startDaemon();
  receiver = await startReceiver();
  browser = await launchChromium();
  page = await newPage();
});

after(async () => {
  await browser?.close();
  await receiver?.close();
  await daemon?.stop();
});

test("without a token the console and the API refuse; the CSP is sent", async () => {
  const response = await fetch(`${daemon.origin}/ui/`);
  assert.equal(response.status, 200);
  const csp = response.headers.get("content-security-policy");
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);

  await page.goto(`${daemon.origin}/ui/#/webhooks`);
  await page.waitForSelector("#token");
  assert.equal(await page.isHidden("#nav"), true, "no page before sign-in");
  // Opening the console sends nothing the API would refuse (and audit as refused).
  const refusals = await daemon.api("GET", "/v1/audit?types=auth.refused");
  assert.equal(refusals.body.rows.length, 0, JSON.stringify(refusals.body));
  assert.equal((await fetch(`${daemon.origin}/v1/me`)).status, 401);
  await page.fill("#token", "not-a-token-at-all");
  await page.press("#token", "Enter");
  await page.waitForSelector("text=That token is not valid.");
  assert.equal(await page.locator("table").count(), 0, "no data shown");
  await shot(page, "01-sign-in-refused");
});

test("an operator signs in and sees the overview", async () => {
  await signIn(page, TOKENS.operator);
  await page.waitForSelector("svg.chart");
  assert.equal(await page.locator("svg.chart").count(), 4);
  await page.waitForSelector("text=Log lag");
  await page.waitForSelector("a >> text=hostile");
  await shot(page, "02-overview");
});

test("create an endpoint, copy its secret once", async () => {
  await page.click("nav >> text=Webhooks");
  await page.fill("form [name=name]", "crm");
  await page.fill("form [name=url]", receiver.url);
  await page.fill("form [name=events]", "message.*");
  await page.click("text=Create endpoint");
  await page.waitForSelector("#secret");
  const secret = await page.inputValue("#secret");
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]{40,}$/);
  await page.click("#copy-secret");
  await page.waitForSelector("#copy-secret >> text=Copied");
  shared.secret = secret;
  await page.waitForSelector("td >> text=crm");
  await shot(page, "03-endpoint-created");
  await page.click("text=Open crm");
  await page.waitForSelector("h1 >> text=crm");
  shared.endpoint = decodeURIComponent(page.url().split("#/webhooks/")[1]);
  const list = await daemon.api("GET", "/v1/webhooks");
  assert.equal(list.body.webhooks.length, 1, "made through the API, once");
});

test("a test event from the form reaches the live view, the receiver and the deliveries", async () => {
  await page.click("nav >> text=Live events");
  await page.waitForSelector("#test-event [data-field=message_id]");
  assert.equal(await page.inputValue("#test-type"), "message.received");
  await page.fill("#test-event [data-field=subject]", "Hello from the console");
  await page.click("#test-event button[type=submit]");
  const accepted = await page.waitForSelector("#test-status >> text=Accepted:");
  const id = (await accepted.textContent()).replace("Accepted: ", "").trim();
  await page.waitForSelector(`#events >> text=${id}`);
  await page.click(`#events >> text=${id}`);
  await page.waitForSelector("#event-detail >> text=Hello from the console");
  await shot(page, "04-live-event");

  const got = await until("the webhook", () => receiver.got.find((r) => JSON.parse(r.body).id === id));
  assert.ok(signedWith(shared.secret, got.headers, got.body), "signed with the secret the console showed");

  await page.goto(`${daemon.origin}/ui/#/webhooks/${encodeURIComponent(shared.endpoint)}`);
  await page.selectOption("#delivery-status", "succeeded");
  await page.waitForSelector("td >> text=message.received");
  await shot(page, "05-deliveries");
});

test("a failing receiver: the failed attempt and its error, then a retry delivers", async () => {
  receiver.failing = true;
  const sent = await daemon.api("POST", "/v1/events", {
    type: "message.received",
    data: {
      message_id: "m-fail-1", from: "a@example.com", to: ["b@example.com"], subject: "will fail",
      size: 10, domain: "example.com", user: "b@example.com", mailbox: "INBOX", is_spam: false,
    },
  });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await page.goto(`${daemon.origin}/ui/#/webhooks/${encodeURIComponent(shared.endpoint)}`);
  await page.selectOption("#delivery-status", "failed");
  await page.click("text=Refresh");
  const link = await until("the failed delivery", async () => {
    await page.click("text=Refresh");
    await page.waitForTimeout(300);
    const l = page.locator("td a.mono").first();
    return (await l.count()) ? l : null;
  }, 20_000);
  await link.click();
  await page.waitForSelector("tr.attempt >> text=500");
  await page.waitForSelector("tr.attempt >> text=receiver down for maintenance");
  await shot(page, "06-failed-attempt");

  receiver.failing = false;
  await page.click("#retry");
  await until("the retried delivery", async () => {
    await page.click("text=Refresh");
    await page.waitForTimeout(300);
    return (await page.locator("h1 .badge", { hasText: "succeeded" }).count()) > 0;
  }, 20_000);
  assert.ok(receiver.got.some((r) => JSON.parse(r.body).data?.message_id === "m-fail-1"));
  await shot(page, "07-retried");

  // Replay since an hour ago: nothing is failed any more, and the console says so.
  await page.click("text=← The endpoint's deliveries");
  await page.click("#replay-title >> xpath=.. >> button[type=submit]");
  await page.waitForSelector("text=0 failed deliveries sent again.");
});

test("a failing plugin shows its error and is reloaded", async () => {
  const sent = await daemon.api("POST", "/v1/events", { type: "test.hostile", data: { do: "trap" } });
  assert.equal(sent.status, 202);
  await page.click("nav >> text=Plugins");
  const card = page.locator("[data-plugin=hostile]");
  await until("the trap to show", async () => {
    await page.waitForTimeout(300);
    return (await card.locator(".last-error").count()) > 0;
  });
  assert.equal(await card.locator(".kinds th").nth(2).textContent(), "trap");
  assert.equal(await card.locator(".kinds tbody td").nth(2).textContent(), "1");
  assert.match(await card.locator(".last-error").textContent(), /trap/);
  await shot(page, "08-plugin-error");
  await card.locator("button.reload").click();
  await page.waitForSelector("text=Reloaded hostile");
  const audit = await daemon.api("GET", "/v1/audit?types=plugin.*&actor=operator");
  assert.ok(audit.body.rows.some((r) => r.event_type.startsWith("plugin.")), JSON.stringify(audit.body));
});

test("the audit log: search, verify, export", async () => {
  await page.click("nav >> text=Audit");
  await page.fill("form [name=types]", "webhook.*");
  await page.click("form button[type=submit]");
  await page.waitForSelector("#audit-status >> text=Page 1: 1 row.");
  assert.equal(await page.locator("#audit-rows tbody tr").count(), 1);
  await page.click("#audit-rows >> text=webhook.created");
  await page.waitForSelector("#audit-row pre");
  assert.match(await page.textContent("#audit-row pre"), /"actor": "operator"/);
  await page.click("#verify");
  await page.waitForSelector("#verify-result >> text=Verified:");
  await shot(page, "09-audit");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.ok(lines.length >= 1 && lines.every((r) => r.event_type.startsWith("webhook.")), "only the matching rows");
});

test("the catalog shows every type with its schema and an example", async () => {
  await page.click("nav >> text=Catalog");
  await page.click(".type-list >> text=user.login");
  await page.waitForSelector("h3 >> text=JSON Schema");
  const catalog = await daemon.api("GET", "/v1/event-types");
  assert.equal(await page.locator(".type-list li").count(), catalog.body.event_types.length);
  await shot(page, "10-catalog");
});

test("a read-only token sees no admin buttons", async () => {
  const viewer = await newPage();
  await signIn(viewer, TOKENS.viewer);
  await viewer.waitForSelector("svg.chart");
  await viewer.click("nav >> text=Plugins");
  await viewer.waitForSelector("[data-plugin=hostile]");
  assert.equal(await viewer.locator("button.reload").count(), 0);
  await viewer.click("nav >> text=Webhooks");
  await viewer.waitForSelector("text=need a token with the admin scope");
  assert.equal(await viewer.locator("text=Create endpoint").count(), 0);
  await viewer.click("nav >> text=Live events");
  await viewer.waitForSelector("text=needs a token with the publish scope");
  assert.equal(await viewer.locator("#test-event").count(), 0);
  await shot(viewer, "11-read-only");
  await viewer.context().close();
});

test("at a phone's 390 px, with the keyboard, in dark mode", async () => {
  const phone = await newPage({ viewport: { width: 390, height: 844 }, colorScheme: "dark", isMobile: true, hasTouch: true });
  await signIn(phone, TOKENS.operator);
  await phone.waitForSelector("svg.chart");
  for (const hash of ["#/overview", "#/live", `#/webhooks/${encodeURIComponent(shared.endpoint)}`, "#/plugins", "#/audit"]) {
    await phone.goto(`${daemon.origin}/ui/${hash}`);
    await phone.waitForSelector("main h1");
    await phone.waitForTimeout(300);
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    const wide = await phone.evaluate(() => [...document.querySelectorAll("main *")]
      .filter((e) => e.getBoundingClientRect().right > 392 && !e.closest(".table-wrap, pre"))
      .slice(0, 3).map((e) => `${e.tagName}.${e.className}: ${e.textContent.slice(0, 40)}`));
    assert.ok(width <= 392, `${hash} is ${width} px wide at 390: ${wide.join(" | ")}`);
  }
  const background = await phone.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const [r, g, b] = background.match(/\d+/g).map(Number);
  assert.ok(r + g + b < 150, `dark background, got ${background}`);
  await phone.goto(`${daemon.origin}/ui/#/overview`);
  await phone.waitForSelector("svg.chart");
  await shot(phone, "12-phone-dark");

  // The keyboard alone: from the top, Tab reaches the pages, Enter opens one.
  const desk = await newPage();
  await signIn(desk, TOKENS.operator);
  await desk.waitForSelector("svg.chart");
  await desk.evaluate(() => document.activeElement?.blur());
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await desk.keyboard.press("Tab");
    reached = await desk.evaluate(() => document.activeElement?.textContent === "Audit");
  }
  assert.ok(reached, "Tab reaches the Audit link");
  await desk.keyboard.press("Enter");
  await desk.waitForSelector("h1 >> text=Audit");
  await desk.keyboard.press("Tab");
  await shot(desk, "13-keyboard");
  await phone.context().close();
  await desk.context().close();
});

test("an endpoint is edited, disabled, enabled, given a new secret and deleted", async () => {
  const made = await daemon.api("POST", "/v1/webhooks", { name: "billing", url: receiver.url, events: ["user.*"] });
  assert.equal(made.status, 201);
  await page.goto(`${daemon.origin}/ui/#/webhooks/${encodeURIComponent(made.body.id)}`);
  await page.waitForSelector("h1 >> text=billing");
  await page.fill("#edit-title >> xpath=.. >> [name=name]", "billing-eu");
  await page.click("#edit-title >> xpath=.. >> button[type=submit]");
  await page.waitForSelector("h1 >> text=billing-eu");
  await page.click("button >> text=Disable");
  await page.waitForSelector("h1 .badge >> text=disabled: operator");
  await page.click("button >> text=Enable");
  await page.waitForSelector("h1 .badge >> text=enabled");
  await page.click("button >> text=Rotate secret");
  await page.waitForSelector("text=New signing secret");
  const secret = await page.inputValue("#secret");
  assert.match(secret, /^whsec_/);
  assert.notEqual(secret, made.body.secret);
  await page.click("button >> text=Send test");
  await page.waitForSelector("text=Test sent:");
  const ping = await until("the signed test", () => receiver.got.find((r) => JSON.parse(r.body).event === "webhook.test"
    && r.headers["webhook-signature"] && signedWith(secret, r.headers, r.body)));
  assert.ok(ping, "the test is signed with the new secret");
  await shot(page, "14-endpoint-lifecycle");
  await page.click("button.danger >> text=Delete");
  await page.waitForSelector("h1 >> text=Webhooks");
  const gone = await daemon.api("GET", `/v1/webhooks/${encodeURIComponent(made.body.id)}`);
  assert.equal(gone.status, 404);
});

test("no request left the daemon's origin", async () => {
  await page.click("nav >> text=Overview");
  await page.waitForSelector("svg.chart");
  await shot(page, "15-overview-after");
  assert.ok(requests.length > 20, `${requests.length} requests seen`);
  const away = requests.filter((u) => !u.startsWith(`${daemon.origin}/`) && !u.startsWith("blob:") && !u.startsWith("data:"));
  assert.deepEqual(away, []);
});
