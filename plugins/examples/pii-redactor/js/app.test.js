// The shared cases (../cases.json) under node's test runner and the SDK's test host,
// plus what only this build can check.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { Config, Event, PluginError } from 'evhost-plugin';
import * as testing from 'evhost-plugin/testing';
import PiiRedactor from './app.js';

const { cases } = JSON.parse(readFileSync(new URL('../cases.json', import.meta.url)));

for (const c of cases) {
  test(c.name, async () => {
    const [actions] = await testing.run(PiiRedactor, c.config, [new Event(c.event.type, c.event.data)]);
    assert.deepEqual(actions, c.expect.actions);
  });
}

test('a bad recipients is refused', () => {
  assert.throws(() => new PiiRedactor(new Config({ recipients: 'yes' })), PluginError);
});
