//! CPU time per GB moved: what each path's processes spend, read from `/proc` before and after
//! the bulk transfers (user + system time of every thread of each process).
//!
//! Each path has its workstation-side process (tether's daemon; the `kubectl port-forward`
//! process) and its cluster-side ones (the traffic manager's container; for a port-forward, the
//! API server, the kubelet and containerd, whose CRI streaming server carries the bytes into the
//! pod's network namespace). Direct has none: the kernel only.

use std::path::Path as FsPath;

/// The processes whose CPU time a path costs.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    pub workstation: Vec<u32>,
    pub cluster: Vec<u32>,
}

/// CPU seconds the processes used, read twice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cpu {
    pub workstation_s: f64,
    pub cluster_s: f64,
}

impl Processes {
    /// Their CPU seconds so far.
    pub fn now(&self) -> Cpu {
        Cpu {
            workstation_s: seconds(&self.workstation),
            cluster_s: seconds(&self.cluster),
        }
    }
}

impl Cpu {
    /// What was used between `self` and `later`, per GB (10^9 bytes) of `bytes`.
    pub fn per_gb(self, later: Cpu, bytes: u64) -> Cpu {
        let gb = bytes as f64 / 1e9;
        Cpu {
            workstation_s: (later.workstation_s - self.workstation_s) / gb,
            cluster_s: (later.cluster_s - self.cluster_s) / gb,
        }
    }
}

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`); 100 on every Linux this runs on, read from
/// `getconf` to be sure.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU seconds `pids` used so far (those gone count nothing).
pub fn seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| cpu_ticks(&stat))
        .sum();
    ticks as f64 / ticks_per_second()
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing one.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU seconds of this process's children that have ended and been waited for (and of
/// theirs): cutime + cstime of `/proc/self/stat`.
pub fn children_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // `rest` starts at field 3: cutime is field 16, index 13 here.
            let cutime: u64 = fields.get(13)?.parse().ok()?;
            let cstime: u64 = fields.get(14)?.parse().ok()?;
            Some(cutime + cstime)
        })
        .unwrap_or(0);
    ticks as f64 / ticks_per_second()
}

/// Host processes whose command name (`/proc/PID/comm`) is one of `names`.
pub fn by_name(names: &[&str]) -> Vec<u32> {
    pids_where(|dir| {
        std::fs::read_to_string(dir.join("comm")).is_ok_and(|comm| names.contains(&comm.trim_end()))
    })
}

/// The traffic manager's process (a container's, seen from the host): `tether-agent manager`.
pub fn manager() -> Vec<u32> {
    agents(b"manager")
}

/// The `tether-agent` processes of `role` (`manager`, `sidecar`), seen from the host.
pub fn agents(role: &[u8]) -> Vec<u32> {
    pids_where(|dir| {
        std::fs::read(dir.join("cmdline")).is_ok_and(|cmdline| {
            let mut args = cmdline.split(|b| *b == 0);
            let program = args.next().unwrap_or_default();
            program.ends_with(b"tether-agent") && args.next() == Some(role)
        })
    })
}

fn pids_where(keep: impl Fn(&FsPath) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            keep(&e.path()).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_name_with_spaces() {
        let stat = "4242 (tether (daemon)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    350 125 0 0 20 0 9 0 1000 123456 789 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(475));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn per_gb_scales_the_difference() {
        let before = Cpu {
            workstation_s: 1.0,
            cluster_s: 2.0,
        };
        let after = Cpu {
            workstation_s: 1.5,
            cluster_s: 4.0,
        };
        assert_eq!(
            before.per_gb(after, 500_000_000),
            Cpu {
                workstation_s: 1.0,
                cluster_s: 4.0
            }
        );
    }

    #[test]
    fn this_process_is_found_by_its_name_and_uses_cpu() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let pids = by_name(&[me.trim_end()]);
        assert!(pids.contains(&std::process::id()), "{pids:?}");
        let p = Processes {
            workstation: vec![std::process::id()],
            cluster: Vec::new(),
        };
        let before = p.now();
        // Work until a clock tick is charged; a broken reading never sees one.
        let mut x = 0u64;
        for i in 0..u64::MAX {
            x = x.wrapping_add(i * i);
            if i % 1_000_000 == 0 && p.now().workstation_s > before.workstation_s {
                break;
            }
            assert!(i < 20_000_000_000, "no CPU time charged to this process");
        }
        std::hint::black_box(x);
    }
}
