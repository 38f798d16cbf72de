// pii-redactor: replaces message events with copies whose recipients' local parts
// and subjects are masked, so webhook receivers never see them.
//
// Config (sidecar `[config]`): `recipients` (default true) masks the part before `@`
// of every recipient, keeping its first character; `subject` (default true) replaces
// the subject with `mask` (default `[redacted]`).

import { Info, Plugin, replace } from 'evhost-plugin';
import { MESSAGE_BOUNCED, MESSAGE_RECEIVED, MESSAGE_SENT } from 'evhost-plugin/types';

/** `alice@example.com` → `a***@example.com`; an address without `@` is masked whole. */
export function maskLocalPart(address) {
  const at = address.lastIndexOf('@');
  if (at < 0) return '***';
  const first = [...address.slice(0, at)][0] ?? '';
  return `${first}***@${address.slice(at + 1)}`;
}

export default class PiiRedactor extends Plugin {
  constructor(config) {
    super(config);
    this.recipients = config.parseOr('recipients', true);
    this.subject = config.parseOr('subject', true);
    this.mask = config.get('mask', '[redacted]');
    this.info = new Info('pii-redactor', '0.1.0', [MESSAGE_RECEIVED, MESSAGE_SENT, MESSAGE_BOUNCED]);
  }

  handle(event) {
    if (event.kind === MESSAGE_RECEIVED || event.kind === MESSAGE_SENT) {
      const message = { ...event.payload() };
      if (this.recipients) message.to = message.to.map(maskLocalPart);
      if (this.subject) message.subject = this.mask;
      return [replace(event.kind, message)];
    }
    if (event.kind === MESSAGE_BOUNCED) {
      const message = { ...event.payload() };
      if (this.recipients) message.to = maskLocalPart(message.to);
      return [replace(event.kind, message)];
    }
    return [];
  }
}
