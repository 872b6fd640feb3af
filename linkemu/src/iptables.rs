//! The NFQUEUE rules that bring a link's packets to the emulator, added and removed exactly.
//!
//! A packet is queued where it *arrives*, in the `mangle PREROUTING` chain of the receiving
//! network namespace: `-i IFACE` on the host (what the workstation sends: [`Direction::Up`]) and
//! `-i PEER` inside the workstation's namespace (what it receives: [`Direction::Down`]). By then
//! the packet has crossed the veth and left its sender's socket (the crossing orphans it). Held
//! on the sending side instead (`POSTROUTING`), it would still count against its socket's
//! send-side limits (TCP small queues, a UDP socket's send buffer), and a host process sending
//! down the link would be throttled to a fraction of the rate by the emulator's own delay.
//!
//! Each rule carries the comment `tether-linkemu IFACE`. No `--queue-bypass`: if the emulator
//! dies without removing them, the link stops instead of silently carrying unemulated traffic.
//! [`remove_all`] clears rules a killed run left, and the cluster's teardown does too.
//!
//! [`Direction::Up`]: crate::Direction::Up
//! [`Direction::Down`]: crate::Direction::Down

use std::process::Command;

/// The comment that marks every rule of the emulator on `iface`.
pub fn tag(iface: &str) -> String {
    format!("tether-linkemu {iface}")
}

/// Where a rule goes: an interface, in the host's network namespace or a named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// A namespace of `ip netns` (`None`: this process's own).
    pub netns: Option<String>,
    pub iface: String,
}

impl Place {
    fn check(&self) -> Result<(), RulesError> {
        check_name(&self.iface)?;
        if let Some(ns) = &self.netns {
            check_name(ns)?;
        }
        Ok(())
    }

    fn iptables(&self, args: &[&str]) -> Result<String, RulesError> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "iptables"]);
                c
            }
            None => Command::new("iptables"),
        };
        // -w: wait for the xtables lock that kube-proxy also takes, instead of failing.
        run(cmd.arg("-w").args(args))
    }
}

/// The emulator's rule at one place; removed when dropped.
#[derive(Debug)]
pub struct Rule {
    place: Place,
    installed: bool,
}

impl Rule {
    /// Removes what an earlier run left at `place`, then queues the packets arriving on its
    /// interface to `queue_num` (in that namespace).
    pub fn install(place: &Place, queue_num: u16) -> Result<Rule, RulesError> {
        place.check()?;
        let stale = remove_all(place)?;
        if stale > 0 {
            tracing::warn!(?place, rules = stale, "Removed rules an earlier run left");
        }
        // Guarded before the rule is added: a failure halfway is cleaned up too.
        let rule = Rule {
            place: place.clone(),
            installed: true,
        };
        place.iptables(&[
            "-t",
            "mangle",
            "-I",
            "PREROUTING",
            "-i",
            &place.iface,
            "-m",
            "comment",
            "--comment",
            &tag(&place.iface),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue_num.to_string(),
        ])?;
        Ok(rule)
    }

    /// Removes the rule now, reporting a failure (dropping does the same, and only logs).
    pub fn remove(mut self) -> Result<(), RulesError> {
        self.installed = false;
        remove_all(&self.place).map(drop)
    }
}

impl Drop for Rule {
    fn drop(&mut self) {
        if self.installed {
            if let Err(e) = remove_all(&self.place) {
                tracing::error!(place = ?self.place, error = %e, "Could not remove the rule");
            }
        }
    }
}

/// Removes every rule of the emulator at `place`; returns how many there were.
pub fn remove_all(place: &Place) -> Result<usize, RulesError> {
    place.check()?;
    let marker = format!("/* {} */", tag(&place.iface));
    // Highest number first, so the numbers of those left do not shift.
    let mut numbers: Vec<u32> = place
        .iptables(&["-t", "mangle", "-L", "PREROUTING", "-n", "--line-numbers"])?
        .lines()
        .filter(|l| l.contains(&marker))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    for n in &numbers {
        place.iptables(&["-t", "mangle", "-D", "PREROUTING", &n.to_string()])?;
    }
    Ok(numbers.len())
}

/// The emulator's rules in the mangle table of `netns` (`None`: this process's), any interface,
/// as `iptables-save` prints them.
pub fn leftovers(netns: Option<&str>) -> Result<Vec<String>, RulesError> {
    let mut cmd = match netns {
        Some(ns) => {
            check_name(ns)?;
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "iptables-save"]);
            c
        }
        None => Command::new("iptables-save"),
    };
    let out = run(cmd.args(["-t", "mangle"]))?;
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
    /// Not a plain interface or namespace name.
    #[error("{0:?} is not a plain interface or namespace name")]
    Interface(String),
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
