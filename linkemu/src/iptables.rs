//! The NFQUEUE rules that bring an interface's packets to the emulator, added and removed
//! exactly.
//!
//! Two rules in the `mangle` table, each carrying the comment `tether-linkemu IFACE`:
//! `PREROUTING -i IFACE` (the packets the far side sends: [`Direction::Up`] when IFACE is the
//! host side of the workstation's veth) to queue N, and `POSTROUTING -o IFACE` (the packets
//! towards it: [`Direction::Down`]) to queue N + 1. No `--queue-bypass`: if the emulator dies
//! without removing them, the link stops instead of silently carrying unemulated traffic.
//! [`remove_all`] clears rules a killed run left, and the cluster's teardown does too.
//!
//! [`Direction::Up`]: crate::Direction::Up
//! [`Direction::Down`]: crate::Direction::Down

use std::process::Command;

/// The comment that marks every rule of the emulator on `iface`.
pub fn tag(iface: &str) -> String {
    format!("tether-linkemu {iface}")
}

/// The chains the rules go into, with the interface match each uses.
const CHAINS: [(&str, &str); 2] = [("PREROUTING", "-i"), ("POSTROUTING", "-o")];

/// The emulator's rules on one interface; removed when dropped.
#[derive(Debug)]
pub struct Rules {
    iface: String,
    installed: bool,
}

impl Rules {
    /// Removes what an earlier run left on `iface`, then queues its incoming packets to
    /// `queue_num` and its outgoing ones to `queue_num + 1`.
    pub fn install(iface: &str, queue_num: u16) -> Result<Rules, RulesError> {
        check_name(iface)?;
        let down_queue = queue_num.checked_add(1).ok_or(RulesError::QueueNum)?;
        let stale = remove_all(iface)?;
        if stale > 0 {
            tracing::warn!(iface, rules = stale, "Removed rules an earlier run left");
        }
        // Guarded from the first rule on.
        let rules = Rules {
            iface: iface.to_owned(),
            installed: true,
        };
        for ((chain, dir), queue) in CHAINS.into_iter().zip([queue_num, down_queue]) {
            iptables(&[
                "-t",
                "mangle",
                "-I",
                chain,
                dir,
                iface,
                "-m",
                "comment",
                "--comment",
                &tag(iface),
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue.to_string(),
            ])?;
        }
        Ok(rules)
    }

    /// Removes the rules now, reporting a failure (dropping does the same, and only logs).
    pub fn remove(mut self) -> Result<(), RulesError> {
        self.installed = false;
        remove_all(&self.iface).map(drop)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        if self.installed {
            if let Err(e) = remove_all(&self.iface) {
                tracing::error!(iface = %self.iface, error = %e, "Could not remove the rules");
            }
        }
    }
}

/// Removes every rule of the emulator on `iface`; returns how many there were.
pub fn remove_all(iface: &str) -> Result<usize, RulesError> {
    check_name(iface)?;
    let marker = format!("/* {} */", tag(iface));
    let mut removed = 0;
    for (chain, _) in CHAINS {
        // Highest number first, so the numbers of those left do not shift.
        let mut numbers: Vec<u32> =
            iptables(&["-t", "mangle", "-L", chain, "-n", "--line-numbers"])?
                .lines()
                .filter(|l| l.contains(&marker))
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for n in numbers {
            iptables(&["-t", "mangle", "-D", chain, &n.to_string()])?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The emulator's rules in the mangle table, any interface, as `iptables-save` prints them.
pub fn leftovers() -> Result<Vec<String>, RulesError> {
    let out = run(Command::new("iptables-save").args(["-t", "mangle"]))?;
    Ok(out
        .lines()
        .filter(|l| l.contains("tether-linkemu"))
        .map(str::to_owned)
        .collect())
}

/// An interface name is passed to iptables and matched in its output: keep it plain.
fn check_name(iface: &str) -> Result<(), RulesError> {
    let plain = !iface.is_empty()
        && iface.len() < 16
        && iface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if plain {
        Ok(())
    } else {
        Err(RulesError::Interface(iface.to_owned()))
    }
}

fn iptables(args: &[&str]) -> Result<String, RulesError> {
    // -w: wait for the xtables lock that kube-proxy also takes, instead of failing.
    run(Command::new("iptables").arg("-w").args(args))
}

fn run(cmd: &mut Command) -> Result<String, RulesError> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| RulesError::Spawn {
        cmd: what.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(RulesError::Failed {
            cmd: what,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rules could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// iptables could not be started (is the `iptables` package installed?).
    #[error("could not run {cmd} (is iptables installed?)")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// iptables refused.
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    /// Not a plain interface name.
    #[error("{0:?} is not an interface name")]
    Interface(String),
    /// The queue number leaves no room for the second queue.
    #[error("the queue number must be below 65535 (the emulator uses it and the next one)")]
    QueueNum,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_interface_names_are_refused() {
        for bad in ["", "a b", "tws0;rm", "averyveryverylongname"] {
            assert!(
                matches!(check_name(bad), Err(RulesError::Interface(_))),
                "{bad}"
            );
        }
        check_name("tws0").unwrap();
        check_name("lemu-123h").unwrap();
    }
}
