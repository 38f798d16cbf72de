//! The daemon's own CPU time: read by the audit writer to tell whether the daemon is
//! busy, and by `evhost bench` to say how busy a measurement kept the machine.

use std::time::Duration;

/// CPU time (user and system) used so far by all of the process's threads, from the
/// process CPU clock; none where that clock cannot be read.
pub fn process_time() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}
