// What the console's browser tests stand on: a daemon built from this tree (two
// tokens, a failing plugin, webhooks allowed to 127.0.0.1), a webhook receiver that
// can be made to fail, and Chromium through playwright-core.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const TOKENS = {
  operator: "console-operator-token-0001",
  viewer: "console-viewer-token-00002",
};

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the browser tests through tests/browser/run.sh`);
  return v;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function startDaemon() {
  const dir = mkdtempSync(join(tmpdir(), "evhost-console-"));
  const plugins = join(dir, "data", "plugins");
  mkdirSync(plugins, { recursive: true });
  copyFileSync(join(need("EVHOST_TEST_PLUGINS_DIR"), "hostile.wasm"), join(plugins, "hostile.wasm"));
  writeFileSync(join(plugins, "hostile.toml"), 'timeout = "1s"\n[config]\nbehave = "by-event"\nsubscribe = "test.*"\n');
  writeFileSync(join(dir, "evhost.yaml"), `
auth:
  tokens:
    - { name: operator, token: ${TOKENS.operator}, scopes: [publish, read, admin] }
    - { name: viewer, token: ${TOKENS.viewer}, scopes: [read] }
events:
  allow_custom_types: true
webhooks:
  allowed_networks: [127.0.0.0/8]
  poll_interval: 100ms
  retry_delays: [200ms]
  max_retries: 1
  timeout: 2s
plugins:
  breaker_failures: 100
`);
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const log = [];
  const child = spawn(need("EVHOST_BIN"), ["serve"], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      EVHOST_CONFIG: join(dir, "evhost.yaml"),
      EVHOST_DATA_DIR: join(dir, "data"),
      EVHOST_SERVER__LISTEN: `127.0.0.1:${port}`,
      EVHOST_LOG__LEVEL: "warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const stream of [child.stdout, child.stderr]) stream.on("data", (d) => log.push(String(d)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`evhost exited (${child.exitCode}):\n${log.join("")}`);
    try {
      const r = await fetch(`${origin}/readyz`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`evhost did not get ready in 60 s:\n${log.join("")}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    origin,
    log,
    async api(method, path, body, token = TOKENS.operator) {
      const r = await fetch(`${origin}${path}`, {
        method,
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, headers: r.headers, body: text ? JSON.parse(text) : null };
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/// A webhook receiver on 127.0.0.1; `failing = true` makes it answer 500.
export async function startReceiver() {
  const got = [];
  const receiver = { got, failing: false, url: "" };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      if (receiver.failing) {
        res.writeHead(500, { "Content-Type": "text/plain" });
        res.end("receiver down for maintenance");
        return;
      }
      got.push({ headers: req.headers, body });
      res.writeHead(204);
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  receiver.url = `http://127.0.0.1:${server.address().port}/hooks`;
  receiver.close = () => new Promise((r) => server.close(r));
  return receiver;
}

/// Whether a request's Standard Webhooks signature is right for `secret` (whsec_…).
export function signedWith(secret, headers, body) {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const content = `${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`;
  const expected = createHmac("sha256", key).update(content).digest("base64");
  return (headers["webhook-signature"] || "").split(" ").includes(`v1,${expected}`);
}

export async function launchChromium() {
  const require = createRequire(`${need("EVHOST_PLAYWRIGHT")}/`);
  const { chromium } = require("./index.js");
  return chromium.launch({
    executablePath: need("EVHOST_CHROMIUM"),
    headless: true,
    chromiumSandbox: false,
    args: [
      "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    ],
  });
}

export async function until(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function screenshotPath(name) {
  return join(need("EVHOST_SCREENSHOTS"), `${name}.png`);
}
