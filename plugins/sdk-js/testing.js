// The test host: outside a component the host functions land here, so a test
// (`node --test`) runs plugin logic without a daemon and looks at what it logged and
// counted.
//
//   import { Config, Event } from 'evhost-plugin';
//   import * as testing from 'evhost-plugin/testing';
//   const host = testing.reset();
//   new SpamRouter(new Config({ threshold: '5' })).handle(new Event(...));
//   assert.deepEqual(host.counters, { spam_routed: 1 });

export class TestHost {
  constructor() {
    this.logs = [];
    this.counters = {};
    this.clockMs = 1_700_000_000_000;
  }

  log(level, message) {
    this.logs.push([level, message]);
  }

  counterAdd(name, value) {
    this.counters[name] = (this.counters[name] ?? 0) + value;
  }

  nowMs() {
    return this.clockMs;
  }
}

let current = new TestHost();

/** The test host in use. */
export function testHost() {
  return current;
}

/** A fresh test host (no logs, no counters); returns it. */
export function reset() {
  current = new TestHost();
  return current;
}

/** Builds the plugin from `config` (an object) and handles each event in turn;
 * returns each call's actions as `evhost plugin run --json` shows them, or
 * `{ error: message }` for a call that threw. */
export async function run(PluginClass, config, events) {
  const { Config } = await import('./index.js');
  const plugin = new PluginClass(new Config(config));
  return events.map((event) => {
    try {
      return JSON.parse(JSON.stringify(plugin.handle(event) ?? []));
    } catch (e) {
      return { error: e.message ?? String(e) };
    }
  });
}
