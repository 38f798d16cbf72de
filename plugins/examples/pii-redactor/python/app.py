"""pii-redactor: replaces message events with copies whose recipients' local parts
and subjects are masked, so webhook receivers never see them.

Config (sidecar `[config]`): `recipients` (default true) masks the part before `@`
of every recipient, keeping its first character; `subject` (default true) replaces
the subject with `mask` (default `[redacted]`).
"""

from evhost_plugin import Config, Event, Info, Plugin, export, replace
from evhost_plugin.types import (
    MESSAGE_BOUNCED, MESSAGE_RECEIVED, MESSAGE_SENT,
    MessageBounced, MessageReceived, MessageSent,
)


def mask_local_part(address: str) -> str:
    """`alice@example.com` → `a***@example.com`; an address without `@` is masked whole."""
    if "@" not in address:
        return "***"
    local, domain = address.rsplit("@", 1)
    return f"{local[:1]}***@{domain}"


class PiiRedactor(Plugin):
    def __init__(self, config: Config):
        self.recipients = config.parse_or("recipients", True)
        self.subject = config.parse_or("subject", True)
        self.mask = config.get("mask", "[redacted]")
        self.info = Info("pii-redactor", "0.1.0", [MESSAGE_RECEIVED, MESSAGE_SENT, MESSAGE_BOUNCED])

    def handle(self, event: Event):
        if event.kind in (MESSAGE_RECEIVED, MESSAGE_SENT):
            cls = MessageReceived if event.kind == MESSAGE_RECEIVED else MessageSent
            message = event.payload(cls)
            if self.recipients:
                message.to = [mask_local_part(a) for a in message.to]
            if self.subject:
                message.subject = self.mask
            return [replace(event.kind, message)]
        if event.kind == MESSAGE_BOUNCED:
            message = event.payload(MessageBounced)
            if self.recipients:
                message.to = mask_local_part(message.to)
            return [replace(event.kind, message)]
        return []


Subscriber = export(PiiRedactor)
