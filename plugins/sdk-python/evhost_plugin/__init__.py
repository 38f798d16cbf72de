"""The evhost plugin SDK for Python.

A plugin is a class with an `info`, built from its configuration, and a `handle`
method; one line exports it as the component's `subscriber` interface:

    from evhost_plugin import Plugin, Info, Config, Event, drop, log, export
    from evhost_plugin.types import MESSAGE_RECEIVED, MessageReceived

    class Hello(Plugin):
        def __init__(self, config: Config):
            self.info = Info("hello", "0.1.0", [MESSAGE_RECEIVED])

        def handle(self, event: Event):
            message = event.payload(MessageReceived)
            log.info(f"message {message.message_id} for {message.user}")
            return []

    Subscriber = export(Hello)

`evhost plugin build` turns the folder into a component with componentize-py. The
logic is plain Python, so pytest runs it without a daemon: outside a component the
host functions (`log`, `config`, `counter_add`, `now_ms`) go to the test host in
`evhost_plugin.testing`, which a test can inspect.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import types

__all__ = [
    "Action", "Actor", "Config", "Event", "Info", "Plugin", "PluginError",
    "counter_add", "deliver", "drop", "emit", "export", "log", "mail_domain_of",
    "now_ms", "number", "replace", "types",
]


class PluginError(Exception):
    """An error the plugin returns on purpose: its message is what the daemon shows."""


# --- the host ----------------------------------------------------------------------

def _real_host():
    """The host functions of the component, or None outside one (tests)."""
    try:
        from wit_world.imports import host, types as wit  # type: ignore
    except ImportError:
        return None
    return host, wit


_HOST = _real_host()


def _test_host():
    from . import testing

    return testing.host()


class log:
    """Log lines, tagged with the plugin's name in the daemon's log."""

    @staticmethod
    def _write(level: str, message: str) -> None:
        if _HOST is None:
            _test_host().log(level, str(message))
            return
        host, wit = _HOST
        host.log(getattr(wit.Level, level.upper()), str(message))

    @staticmethod
    def trace(message: str) -> None:
        log._write("trace", message)

    @staticmethod
    def debug(message: str) -> None:
        log._write("debug", message)

    @staticmethod
    def info(message: str) -> None:
        log._write("info", message)

    @staticmethod
    def warn(message: str) -> None:
        log._write("warn", message)

    @staticmethod
    def error(message: str) -> None:
        log._write("error", message)


def counter_add(name: str, value: int = 1) -> None:
    """Adds to a plugin-scoped counter (`evhost_plugin_counter_total{plugin, name}`)."""
    if _HOST is None:
        _test_host().counter_add(name, value)
    else:
        _HOST[0].counter_add(name, int(value))


def now_ms() -> int:
    """Milliseconds since the Unix epoch (the host's clock)."""
    if _HOST is None:
        return _test_host().now_ms()
    return _HOST[0].now_ms()


# --- what a plugin works with ------------------------------------------------------

class Config:
    """The plugin's configuration: the `[config]` table of its sidecar, as strings."""

    def __init__(self, pairs=()):
        self._values: List[Tuple[str, str]] = [(str(k), str(v)) for k, v in (
            pairs.items() if isinstance(pairs, dict) else pairs)]

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        for k, v in self._values:
            if k == key:
                return v
        return default

    def parse_or(self, key: str, default, kind=None):
        """The value of `key` as the type of `default` (or `kind`); `default` when it
        is not set. A value that does not parse raises PluginError naming the key."""
        raw = self.get(key)
        if raw is None:
            return default
        kind = kind or type(default)
        text = raw.strip()
        try:
            if kind is bool:
                if text not in ("true", "false"):
                    raise ValueError("expected true or false")
                return text == "true"
            value = kind(text)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("not a finite number")
            return value
        except ValueError as e:
            raise PluginError(f"config {key} = {raw!r}: {e}") from None

    def list(self, key: str) -> List[str]:
        """A comma-separated list (`"a, b,c"` → `["a", "b", "c"]`); empty when not set."""
        raw = self.get(key) or ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    def pairs(self) -> List[Tuple[str, str]]:
        return list(self._values)


@dataclass
class Info:
    """What a plugin says about itself: its name, version and the event-type
    patterns it wants (`message.received`, `message.*` or `*`)."""

    name: str
    version: str
    subscriptions: List[str] = field(default_factory=list)


@dataclass
class Actor:
    """Who caused an event."""

    token: Optional[str] = None
    ip: Optional[str] = None
    on_behalf_of: Optional[str] = None


@dataclass
class Event:
    """An event as evhost accepted it; `data` is its payload, parsed."""

    kind: str
    data: Any
    id: str = "00000000-0000-7000-8000-000000000000"
    time: str = "1970-01-01T00:00:00Z"
    source: str = "/test"
    actor: Actor = field(default_factory=Actor)

    def payload(self, cls=None):
        """The payload as the catalog's class for this type (or `cls`). A payload
        that does not fit raises PluginError."""
        cls = cls or types.PAYLOADS.get(self.kind)
        if cls is None:
            raise PluginError(f"{self.kind} is not a catalog type; read event.data")
        try:
            return cls.from_dict(self.data)
        except (ValueError, TypeError) as e:
            raise PluginError(str(e)) from None


class Plugin:
    """Subclass it: set `self.info` in `__init__(self, config)` (raise PluginError to
    refuse the configuration) and return actions from `handle(self, event)`: an
    empty list lets the event pass unchanged."""

    info: Info

    def __init__(self, config: Config):
        pass

    def handle(self, event: Event) -> list:
        return []


# --- actions -----------------------------------------------------------------------

@dataclass
class Action:
    """One decision: `drop`, `replace`, `emit` or `deliver` (use the functions)."""

    verb: str
    reason: Optional[str] = None
    target: Optional[str] = None
    kind: Optional[str] = None
    data: Any = None

    def to_json(self) -> Dict[str, Any]:
        """As `evhost plugin run` shows actions: `{"drop": reason}`, `{"emit": {…}}`."""
        if self.verb == "drop":
            return {"drop": self.reason}
        if self.verb == "deliver":
            event = None if self.kind is None else {"type": self.kind, "data": self.data}
            return {"deliver": {"target": self.target, "event": event}}
        return {self.verb: {"type": self.kind, "data": self.data}}


def _plain(payload):
    return payload.to_dict() if isinstance(payload, types.Payload) else payload


def drop(reason: str) -> Action:
    """Stop the event here; the reason is recorded in the audit log."""
    return Action("drop", reason=str(reason))


def replace(kind: str, payload) -> Action:
    """Continue with this event (same id and time) in place of the one handled."""
    return Action("replace", kind=kind, data=_plain(payload))


def emit(kind: str, payload) -> Action:
    """Publish a new event as well."""
    return Action("emit", kind=kind, data=_plain(payload))


def deliver(target: str, kind: Optional[str] = None, payload=None) -> Action:
    """Send the handled event (or a new one) to the webhook endpoint named `target`."""
    return Action("deliver", target=target, kind=kind,
                  data=None if kind is None else _plain(payload))


def mail_domain_of(data: Any) -> Optional[str]:
    """The mail domain an event's payload is about: its `domain`, else the domain of
    its `email` or `from` address, lower-cased (as the daemon's own rule)."""
    if not isinstance(data, dict):
        return None
    domain = data.get("domain")
    if isinstance(domain, str) and domain.strip():
        return domain.strip().lower()
    for key in ("email", "from"):
        address = data.get(key)
        if isinstance(address, str):
            if "@" not in address:
                return None
            part = address.rsplit("@", 1)[1].strip().rstrip(">")
            return part.lower() if part else None
    return None


def number(value: float) -> str:
    """A number as the Rust SDK writes it: `5` for 5.0, `9.5` for 9.5."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


# --- the export --------------------------------------------------------------------

def _to_wit(wit, action: Action):
    def new_event(kind, data):
        return wit.NewEvent(kind=kind, data=json.dumps(data))

    if action.verb == "drop":
        return wit.Action_Drop(action.reason)
    if action.verb == "replace":
        return wit.Action_Replace(new_event(action.kind, action.data))
    if action.verb == "emit":
        return wit.Action_Emit(new_event(action.kind, action.data))
    event = None if action.kind is None else new_event(action.kind, action.data)
    return wit.Action_Deliver(wit.Delivery(target=action.target, event=event))


def export(plugin_class):
    """The component's `subscriber` for `plugin_class`; assign it to `Subscriber` in
    the app module. Outside a component it returns the class unchanged."""
    try:
        from wit_world import exports  # type: ignore
        from wit_world.imports import types as wit  # type: ignore
        from componentize_py_types import Err  # type: ignore
    except ImportError:
        return plugin_class

    def failure(e: BaseException) -> str:
        if isinstance(e, PluginError):
            return str(e)
        return f"{type(e).__name__}: {e}"

    class Subscriber(exports.Subscriber):
        plugin = None

        def init(self, config):
            try:
                plugin = plugin_class(Config(config))
                info = plugin.info
            except Exception as e:
                raise Err(failure(e))
            Subscriber.plugin = plugin
            return wit.Info(name=info.name, version=info.version,
                            subscriptions=list(info.subscriptions))

        def handle(self, event):
            plugin = Subscriber.plugin
            if plugin is None:
                raise Err("handle called before a successful init")
            try:
                data = json.loads(event.data)
                actor = Actor(event.actor.token, event.actor.ip, event.actor.on_behalf_of)
                ours = Event(kind=event.kind, data=data, id=event.id, time=event.time,
                             source=event.source, actor=actor)
                actions = plugin.handle(ours) or []
                return [_to_wit(wit, a) for a in actions]
            except Exception as e:
                raise Err(failure(e))

    return Subscriber
