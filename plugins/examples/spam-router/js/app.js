// spam-router: a `message.received` whose `spam_score` is over the configured
// threshold becomes a `spam.detected` event and leaves normal delivery.
//
// Config (sidecar `[config]`): `threshold` (default 5.0), `action` recorded in the
// `spam.detected` payload (default `quarantine`).

import { Info, Plugin, counterAdd, drop, emit } from 'evhost-plugin';
import { MESSAGE_RECEIVED, SPAM_DETECTED } from 'evhost-plugin/types';

export default class SpamRouter extends Plugin {
  constructor(config) {
    super(config);
    this.threshold = config.parseOr('threshold', 5.0);
    this.action = config.get('action', 'quarantine');
    this.info = new Info('spam-router', '0.1.0', [MESSAGE_RECEIVED]);
  }

  handle(event) {
    const message = event.payload();
    const score = message.spam_score;
    if (score === undefined || score === null || !(score > this.threshold)) return [];
    counterAdd('spam_routed', 1);
    const detected = {
      message_id: message.message_id,
      from: message.from,
      to: message.to,
      domain: message.domain,
      score,
      threshold: this.threshold,
      action: this.action,
    };
    return [emit(SPAM_DETECTED, detected), drop(`spam score ${score} over ${this.threshold}`)];
  }
}
