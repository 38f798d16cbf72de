"""A plugin that does nothing: what one call costs in Python (bench only)."""

from evhost_plugin import Config, Event, Info, Plugin, export


class Passthrough(Plugin):
    def __init__(self, config: Config):
        self.info = Info("passthrough", "0.1.0", ["*"])

    def handle(self, event: Event):
        return []


Subscriber = export(Passthrough)
