//! Other processes of this machine, as `/proc` shows them.

/// Whether `pid` is a running process. A zombie is not: a process killed with `kill -9` stays one
/// until its parent reaps it, which may be never where the parent is a container's PID 1 that
/// reaps nothing. Pid 0 is no process.
pub fn running(pid: u32) -> bool {
    pid != 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')').is_some_and(|(_, rest)| {
                !matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            })
        })
}
