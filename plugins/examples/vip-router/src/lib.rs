//! vip-router: events of the configured mail domains are also delivered to one named
//! webhook endpoint (the VIP desk), whatever that endpoint subscribes to.
//!
//! Config (sidecar `[config]`): `domains`, comma-separated (required); `target`, the
//! endpoint's name (default `vip`).

use evhost_plugin::prelude::*;

pub struct VipRouter {
    domains: Vec<String>,
    target: String,
}

impl Plugin for VipRouter {
    fn init(config: &Config) -> Result<(Info, Self), String> {
        let domains: Vec<String> = config
            .list("domains")
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        if domains.is_empty() {
            return Err("config domains is required (comma-separated mail domains)".into());
        }
        let target = config.get("target").unwrap_or("vip").to_string();
        let info = Info::new("vip-router", env!("CARGO_PKG_VERSION")).subscribe(["message.*"]);
        Ok((info, VipRouter { domains, target }))
    }

    fn handle(&self, event: &Event) -> Result<Vec<Action>, String> {
        let domain = evhost_plugin::catalog::mail_domain_of(&event.data);
        match domain {
            Some(d) if self.domains.contains(&d) => Ok(vec![Action::deliver(&self.target)]),
            _ => Ok(pass()),
        }
    }
}

evhost_plugin::export_plugin!(VipRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use evhost_plugin::serde_json::json;

    fn plugin() -> VipRouter {
        let config = Config::from_pairs([
            ("domains", "VIP.example, board.example"),
            ("target", "desk"),
        ]);
        VipRouter::init(&config).unwrap().1
    }

    #[test]
    fn vip_domains_are_delivered_to_the_target() {
        let e = Event::new("message.received", &json!({"domain": "vip.example"}));
        assert_eq!(plugin().handle(&e).unwrap(), vec![Action::deliver("desk")]);
        let e = Event::new("message.sent", &json!({"from": "ceo@Board.example"}));
        assert_eq!(plugin().handle(&e).unwrap(), vec![Action::deliver("desk")]);
    }

    #[test]
    fn other_domains_pass() {
        let e = Event::new("message.received", &json!({"domain": "example.com"}));
        assert!(plugin().handle(&e).unwrap().is_empty());
    }

    #[test]
    fn domains_are_required() {
        assert!(VipRouter::init(&Config::default()).is_err());
    }
}
