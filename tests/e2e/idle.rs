//! An idle daemon costs nothing: with plugins loaded and no traffic, the plugin
//! clock thread sleeps and the whole process uses (almost) no CPU.

use std::time::Duration;

use evhost_e2e::{Daemon, Options, plugin_wasm};

/// (voluntary context switches of the thread named `name`, CPU ticks of the whole
/// process) from `/proc`.
fn sample(pid: i32, name: &str) -> (u64, u64) {
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            switches += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .map(|v| v.trim().parse::<u64>().unwrap())
                .unwrap();
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (switches, ticks)
}

#[tokio::test]
async fn an_idle_daemon_with_plugins_loaded_does_not_spin() {
    let d = Daemon::start_with(Options::default().env("EVHOST_PLUGINS__SETTLE", "20ms")).await;
    d.install_plugin("spam-router", &plugin_wasm("spam_router"))
        .await;
    d.write_sidecar("vip-router", Some("[config]\ndomains = \"vip.example\"\n"));
    d.install_plugin("vip-router", &plugin_wasm("vip_router"))
        .await;
    // One event through both plugins, so the clock has run and stopped again.
    d.publish(
        "message.received",
        &evhost_e2e::received("a.example", false),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (switches_before, ticks_before) = sample(d.pid(), "evhost-plugin-c");
    let idle = Duration::from_secs(4);
    tokio::time::sleep(idle).await;
    let (switches_after, ticks_after) = sample(d.pid(), "evhost-plugin-c");
    // An idle clock looks once a second whether its engines are gone; a ticking one
    // would switch about 4,000 times here.
    let switches = switches_after - switches_before;
    assert!(
        switches <= 12,
        "the plugin clock woke {switches} times in {idle:?} with no traffic"
    );
    // 4 s of one core is 400 ticks of 10 ms; a 1 kHz ticker alone cost about 9.
    let ticks = ticks_after - ticks_before;
    assert!(
        ticks <= 4,
        "the idle daemon used {ticks} CPU ticks in {idle:?}; log:\n{}",
        d.log()
    );
}
