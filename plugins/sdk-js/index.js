// The evhost plugin SDK for JavaScript.
//
// A plugin is a class with an `info`, built from its configuration, and a `handle`
// method; its module's default export is the class:
//
//   import { Plugin, Info, log } from 'evhost-plugin';
//   import { MESSAGE_RECEIVED } from 'evhost-plugin/types';
//
//   export default class Hello extends Plugin {
//     constructor(config) {
//       super(config);
//       this.info = new Info('hello', '0.1.0', [MESSAGE_RECEIVED]);
//     }
//     handle(event) {
//       const message = event.payload();
//       log.info(`message ${message.message_id} for ${message.user}`);
//       return [];
//     }
//   }
//
// `evhost plugin build` bundles it with the SDK and makes it a component with
// componentize-js. The logic is plain JavaScript, so `node --test` runs it without a
// daemon: outside a component the host functions go to the test host in
// `evhost-plugin/testing`, which a test can inspect.

import * as types from './types.js';
import { testHost } from './testing.js';

export { types };

/** An error the plugin returns on purpose: its message is what the daemon shows. */
export class PluginError extends Error {}

// The host: the component's imports once `useHost` is called (the build does), else
// the test host.
let host = null;

/** Connects the SDK to the component's `evhost:plugin/host` imports (the build's entry calls it). */
export function useHost(imports) {
  host = imports;
}

function write(level, message) {
  if (host) host.log(level, String(message));
  else testHost().log(level, String(message));
}

/** Log lines, tagged with the plugin's name in the daemon's log. */
export const log = {
  trace: (m) => write('trace', m),
  debug: (m) => write('debug', m),
  info: (m) => write('info', m),
  warn: (m) => write('warn', m),
  error: (m) => write('error', m),
};

/** Adds to a plugin-scoped counter (`evhost_plugin_counter_total{plugin, name}`). */
export function counterAdd(name, value = 1) {
  if (host) host.counterAdd(String(name), BigInt(value));
  else testHost().counterAdd(String(name), Number(value));
}

/** Milliseconds since the Unix epoch (the host's clock). */
export function nowMs() {
  return host ? Number(host.nowMs()) : testHost().nowMs();
}

/** The plugin's configuration: the `[config]` table of its sidecar, as strings. */
export class Config {
  constructor(pairs = []) {
    this.values = Array.isArray(pairs) ? pairs.map(([k, v]) => [String(k), String(v)])
      : Object.entries(pairs).map(([k, v]) => [k, String(v)]);
  }

  get(key, fallback = undefined) {
    const found = this.values.find(([k]) => k === key);
    return found ? found[1] : fallback;
  }

  /** The value of `key` as the type of `fallback` (number or boolean); `fallback`
   * when it is not set. A value that does not parse throws PluginError naming the key. */
  parseOr(key, fallback) {
    const raw = this.get(key);
    if (raw === undefined) return fallback;
    const text = raw.trim();
    if (typeof fallback === 'boolean') {
      if (text === 'true' || text === 'false') return text === 'true';
      throw new PluginError(`config ${key} = ${JSON.stringify(raw)}: expected true or false`);
    }
    if (typeof fallback === 'number') {
      const value = Number(text);
      if (text === '' || !Number.isFinite(value)) {
        throw new PluginError(`config ${key} = ${JSON.stringify(raw)}: not a finite number`);
      }
      return value;
    }
    return raw;
  }

  /** A comma-separated list (`"a, b,c"` → `["a", "b", "c"]`); empty when not set. */
  list(key) {
    return (this.get(key) ?? '').split(',').map((s) => s.trim()).filter((s) => s);
  }
}

/** What a plugin says about itself: name, version, event-type patterns. */
export class Info {
  constructor(name, version, subscriptions = []) {
    this.name = name;
    this.version = version;
    this.subscriptions = subscriptions;
  }
}

/** An event as evhost accepted it; `data` is its payload, parsed. */
export class Event {
  constructor(kind, data, { id = '00000000-0000-7000-8000-000000000000', time = '1970-01-01T00:00:00Z', source = '/test', actor = {} } = {}) {
    this.kind = kind;
    this.data = data;
    this.id = id;
    this.time = time;
    this.source = source;
    this.actor = { token: null, ip: null, onBehalfOf: null, ...actor };
  }

  /** The payload, checked against the catalog's fields for its type: a missing
   * required field or one of the wrong JSON type throws PluginError. */
  payload() {
    const fields = types.FIELDS[this.kind];
    if (!fields) throw new PluginError(`${this.kind} is not a catalog type; read event.data`);
    const data = this.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new PluginError(`${this.kind}: the payload is not a JSON object`);
    }
    for (const [name, [kind, required]] of Object.entries(fields)) {
      const value = data[name];
      if (value === undefined || value === null) {
        if (required) throw new PluginError(`${this.kind}: missing field ${JSON.stringify(name)}`);
      } else if (!fits(kind, value)) {
        throw new PluginError(`${this.kind}: field ${JSON.stringify(name)} is not a JSON ${kind}`);
      }
    }
    return data;
  }
}

function fits(kind, value) {
  switch (kind) {
    case 'string': return typeof value === 'string';
    case 'integer': return Number.isInteger(value);
    case 'number': return typeof value === 'number';
    case 'boolean': return typeof value === 'boolean';
    case 'array': return Array.isArray(value);
    case 'object': return typeof value === 'object' && !Array.isArray(value);
    default: return true;
  }
}

/** Extend it: set `this.info` in the constructor (throw PluginError to refuse the
 * configuration) and return actions from `handle(event)`: an empty list lets the
 * event pass unchanged. */
export class Plugin {
  constructor(_config) {}

  handle(_event) {
    return [];
  }
}

/** One decision; made by `drop`, `replace`, `emit` and `deliver`. */
export class Action {
  constructor(verb, fields) {
    this.verb = verb;
    Object.assign(this, fields);
  }

  /** As `evhost plugin run` shows actions: `{"drop": reason}`, `{"emit": {…}}`. */
  toJSON() {
    if (this.verb === 'drop') return { drop: this.reason };
    if (this.verb === 'deliver') {
      const event = this.kind === undefined ? null : { type: this.kind, data: this.data };
      return { deliver: { target: this.target, event } };
    }
    return { [this.verb]: { type: this.kind, data: this.data } };
  }
}

/** Stop the event here; the reason is recorded in the audit log. */
export const drop = (reason) => new Action('drop', { reason: String(reason) });
/** Continue with this event (same id and time) in place of the one handled. */
export const replace = (kind, data) => new Action('replace', { kind, data });
/** Publish a new event as well. */
export const emit = (kind, data) => new Action('emit', { kind, data });
/** Send the handled event (or a new one) to the webhook endpoint named `target`. */
export const deliver = (target, kind = undefined, data = undefined) =>
  new Action('deliver', { target, kind, data });

/** The mail domain an event's payload is about: its `domain`, else the domain of
 * its `email` or `from` address, lower-cased (as the daemon's own rule). */
export function mailDomainOf(data) {
  if (data === null || typeof data !== 'object') return null;
  if (typeof data.domain === 'string' && data.domain.trim()) return data.domain.trim().toLowerCase();
  for (const key of ['email', 'from']) {
    const address = data[key];
    if (typeof address === 'string') {
      const at = address.lastIndexOf('@');
      if (at < 0) return null;
      const part = address.slice(at + 1).trim().replace(/>+$/, '');
      return part ? part.toLowerCase() : null;
    }
  }
  return null;
}

function toWit(action) {
  const newEvent = (kind, data) => ({ kind, data: JSON.stringify(data) });
  switch (action.verb) {
    case 'drop': return { tag: 'drop', val: action.reason };
    case 'replace': return { tag: 'replace', val: newEvent(action.kind, action.data) };
    case 'emit': return { tag: 'emit', val: newEvent(action.kind, action.data) };
    default: return {
      tag: 'deliver',
      val: { target: action.target, event: action.kind === undefined ? undefined : newEvent(action.kind, action.data) },
    };
  }
}

function failure(e) {
  return e instanceof PluginError ? e.message : `${e?.name ?? 'Error'}: ${e?.message ?? e}`;
}

/** The component's `subscriber` export for `PluginClass` (the build's entry uses it). */
export function subscriberFor(PluginClass) {
  let plugin = null;
  return {
    init(pairs) {
      try {
        plugin = new PluginClass(new Config(pairs));
        const { name, version, subscriptions } = plugin.info;
        return { name, version, subscriptions: [...subscriptions] };
      } catch (e) {
        throw failure(e);
      }
    },
    handle(event) {
      if (!plugin) throw 'handle called before a successful init';
      try {
        const ours = new Event(event.kind, JSON.parse(event.data), {
          id: event.id, time: event.time, source: event.source, actor: event.actor,
        });
        return (plugin.handle(ours) ?? []).map(toWit);
      } catch (e) {
        throw failure(e);
      }
    },
  };
}
