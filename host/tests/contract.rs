//! The plugin contract in `wit/` parses and has the shape the host and SDK rely on.

use std::path::Path;

#[test]
fn plugin_contract_parses_and_exports_init_and_handle() {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_path(&wit).expect("wit/ parses");
    let package = &resolve.packages[package];
    assert_eq!(package.name.to_string(), "evhost:plugin@0.1.0");

    let world = &resolve.worlds[package.worlds["plugin"]];
    let interface_names = |items: &mut dyn Iterator<Item = &wit_parser::WorldItem>| -> Vec<String> {
        items
            .filter_map(|item| match item {
                wit_parser::WorldItem::Interface { id, .. } => resolve.interfaces[*id].name.clone(),
                _ => None,
            })
            .collect()
    };
    let exports = interface_names(&mut world.exports.values());
    let imports = interface_names(&mut world.imports.values());
    assert!(exports.contains(&"subscriber".to_string()), "{exports:?}");
    assert!(imports.contains(&"host".to_string()), "{imports:?}");

    let subscriber = &resolve.interfaces[package.interfaces["subscriber"]];
    for function in ["init", "handle"] {
        let f = &subscriber.functions[function];
        assert!(f.docs.contents.is_some(), "{function} is documented");
    }
    let host = &resolve.interfaces[package.interfaces["host"]];
    let mut offered: Vec<_> = host.functions.keys().cloned().collect();
    offered.sort();
    assert_eq!(offered, ["config", "counter-add", "log", "now-ms"]);
}
