"""The test host: outside a component, the host functions land here, so a test (pytest)
can run plugin logic without a daemon and look at what it logged and counted.

    from evhost_plugin import Config, Event, testing

    def test_spam_is_routed():
        testing.reset()
        plugin = SpamRouter(Config({"threshold": "5"}))
        actions = plugin.handle(Event("message.received", {...}))
        assert testing.host().counters == {"spam_routed": 1}
"""

from dataclasses import dataclass, field
from typing import Dict, List, Tuple


@dataclass
class TestHost:
    """What a plugin did through the host: its log lines and counters."""

    __test__ = False  # not a pytest test class

    logs: List[Tuple[str, str]] = field(default_factory=list)
    counters: Dict[str, int] = field(default_factory=dict)
    clock_ms: int = 1_700_000_000_000

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def counter_add(self, name: str, value: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + int(value)

    def now_ms(self) -> int:
        return self.clock_ms


_HOST = TestHost()


def host() -> TestHost:
    """The test host in use."""
    return _HOST


def reset() -> TestHost:
    """A fresh test host (no logs, no counters); returns it."""
    global _HOST
    _HOST = TestHost()
    return _HOST


def run(plugin_class, config, events):
    """Builds the plugin from `config` (a dict) and handles each event in turn;
    returns each call's actions as `evhost plugin run --json` shows them, or
    `{"error": message}` for a call that raised."""
    from . import Config, PluginError

    plugin = plugin_class(Config(config))
    results = []
    for event in events:
        try:
            results.append([a.to_json() for a in plugin.handle(event) or []])
        except PluginError as e:
            results.append({"error": str(e)})
    return results
