"""spam-router: a `message.received` whose `spam_score` is over the configured
threshold becomes a `spam.detected` event and leaves normal delivery.

Config (sidecar `[config]`): `threshold` (default 5.0), `action` recorded in the
`spam.detected` payload (default `quarantine`).
"""

from evhost_plugin import Config, Event, Info, Plugin, counter_add, drop, emit, export, number
from evhost_plugin.types import MESSAGE_RECEIVED, SPAM_DETECTED, MessageReceived, SpamDetected


class SpamRouter(Plugin):
    def __init__(self, config: Config):
        self.threshold = config.parse_or("threshold", 5.0)
        self.action = config.get("action", "quarantine")
        self.info = Info("spam-router", "0.1.0", [MESSAGE_RECEIVED])

    def handle(self, event: Event):
        message = event.payload(MessageReceived)
        score = message.spam_score
        if score is None or not score > self.threshold:
            return []
        counter_add("spam_routed", 1)
        detected = SpamDetected(
            message_id=message.message_id,
            from_=message.from_,
            to=message.to,
            domain=message.domain,
            score=score,
            threshold=self.threshold,
            action=self.action,
        )
        return [
            emit(SPAM_DETECTED, detected),
            drop(f"spam score {number(score)} over {number(self.threshold)}"),
        ]


Subscriber = export(SpamRouter)
