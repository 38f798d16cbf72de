"""vip-router: events of the configured mail domains are also delivered to one named
webhook endpoint (the VIP desk), whatever that endpoint subscribes to.

Config (sidecar `[config]`): `domains`, comma-separated (required); `target`, the
endpoint's name (default `vip`).
"""

from evhost_plugin import Config, Event, Info, Plugin, PluginError, deliver, export, mail_domain_of


class VipRouter(Plugin):
    def __init__(self, config: Config):
        self.domains = [d.lower() for d in config.list("domains")]
        if not self.domains:
            raise PluginError("config domains is required (comma-separated mail domains)")
        self.target = config.get("target", "vip")
        self.info = Info("vip-router", "0.1.0", ["message.*"])

    def handle(self, event: Event):
        domain = mail_domain_of(event.data)
        if domain is not None and domain in self.domains:
            return [deliver(self.target)]
        return []


Subscriber = export(VipRouter)
