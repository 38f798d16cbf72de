//! The daemon's own CPU time: read by the audit writer to tell whether the daemon is
//! busy, and by `evhost bench` to say how busy a measurement kept the machine.

use std::time::Duration;

/// CPU time (user and system) used so far by all of the process's threads, from the
/// process CPU clock; none where that clock cannot be read.
pub fn process_time() -> Option<Duration> {
    clock(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time used so far by the calling thread alone; none where its clock cannot be
/// read.
pub fn thread_time() -> Option<Duration> {
    clock(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn clock(id: nix::time::ClockId) -> Option<Duration> {
    nix::time::clock_gettime(id).ok().map(Duration::from)
}
