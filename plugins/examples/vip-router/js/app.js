// vip-router: events of the configured mail domains are also delivered to one named
// webhook endpoint (the VIP desk), whatever that endpoint subscribes to.
//
// Config (sidecar `[config]`): `domains`, comma-separated (required); `target`, the
// endpoint's name (default `vip`).

import { Info, Plugin, PluginError, deliver, mailDomainOf } from 'evhost-plugin';

export default class VipRouter extends Plugin {
  constructor(config) {
    super(config);
    this.domains = config.list('domains').map((d) => d.toLowerCase());
    if (this.domains.length === 0) {
      throw new PluginError('config domains is required (comma-separated mail domains)');
    }
    this.target = config.get('target', 'vip');
    this.info = new Info('vip-router', '0.1.0', ['message.*']);
  }

  handle(event) {
    const domain = mailDomainOf(event.data);
    return domain !== null && this.domains.includes(domain) ? [deliver(this.target)] : [];
  }
}
