//! What a link does to packets: the named profiles of the benchmark and their parameters.

use std::{fmt, str::FromStr, time::Duration};

/// One link's behaviour, the same in both directions (a symmetric access link).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Round-trip time the link adds: each direction delays by half of it.
    pub rtt: Duration,
    /// Each packet's one-way delay varies uniformly within ± this. Jitter alone never reorders:
    /// a packet is never released before the one that entered the link before it.
    pub jitter: Duration,
    /// Bits per second each way; `None` for no limit.
    pub rate_bps: Option<u64>,
    /// Probability that a packet is lost, in each direction.
    pub loss: f64,
    /// Probability that a packet is held back by [`Profile::reorder_gap`] beyond its turn, so
    /// that the packets behind it overtake it.
    pub reorder: f64,
    /// How far a reordered packet falls behind its turn; also the most any packet is displaced.
    pub reorder_gap: Duration,
    /// The bottleneck's buffer, as time to drain it at the rate: a packet that would wait longer
    /// than this to be sent is dropped (drop-tail), as a router's full queue does.
    pub buffer: Duration,
}

impl Profile {
    /// No emulation at all: packets pass at once.
    pub const LAN: Profile = Profile {
        rtt: Duration::ZERO,
        jitter: Duration::ZERO,
        rate_bps: None,
        loss: 0.0,
        reorder: 0.0,
        reorder_gap: Duration::ZERO,
        buffer: Duration::from_millis(100),
    };

    /// A good wide-area path: 20 ms RTT, 200 Mbit/s.
    pub const WAN20: Profile = Profile {
        rtt: Duration::from_millis(20),
        rate_bps: Some(200_000_000),
        // One bandwidth-delay product of buffer: the classic router sizing.
        buffer: Duration::from_millis(20),
        ..Profile::LAN
    };

    /// A poor path (Wi-Fi far away): 50 ms RTT, 50 Mbit/s, 1 % loss each way, light jitter and
    /// light reordering.
    pub const LOSSY50: Profile = Profile {
        rtt: Duration::from_millis(50),
        jitter: Duration::from_millis(1),
        rate_bps: Some(50_000_000),
        loss: 0.01,
        reorder: 0.005,
        reorder_gap: Duration::from_millis(3),
        buffer: Duration::from_millis(50),
    };

    /// One-way delay.
    pub fn delay(&self) -> Duration {
        self.rtt / 2
    }

    /// True when the profile changes nothing: no emulator needs to run.
    pub fn is_passthrough(&self) -> bool {
        self.rtt.is_zero()
            && self.jitter.is_zero()
            && self.rate_bps.is_none()
            && self.loss == 0.0
            && self.reorder == 0.0
    }

    /// Checks the parameters a person can get wrong.
    pub fn validate(&self) -> Result<(), ProfileError> {
        for (name, p) in [("loss", self.loss), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(ProfileError::Probability { name, value: p });
            }
        }
        if self.rate_bps == Some(0) {
            return Err(ProfileError::ZeroRate);
        }
        Ok(())
    }

    /// Time to put `bytes` on the wire at the rate (zero without a rate).
    pub fn serialization(&self, bytes: usize) -> Duration {
        match self.rate_bps {
            Some(bps) => Duration::from_nanos(
                u64::try_from(bytes as u128 * 8 * 1_000_000_000 / u128::from(bps))
                    .unwrap_or(u64::MAX),
            ),
            None => Duration::ZERO,
        }
    }
}

/// The benchmark's named profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Lan,
    Wan20,
    Lossy50,
}

impl Named {
    pub const ALL: [Named; 3] = [Named::Lan, Named::Wan20, Named::Lossy50];

    pub fn profile(self) -> Profile {
        match self {
            Named::Lan => Profile::LAN,
            Named::Wan20 => Profile::WAN20,
            Named::Lossy50 => Profile::LOSSY50,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Named::Lan => "lan",
            Named::Wan20 => "wan20",
            Named::Lossy50 => "lossy50",
        }
    }
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Named {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Named, ProfileError> {
        Named::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| ProfileError::Unknown(s.to_owned()))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(f, "RTT {} ms", ms(self.rtt))?;
        if !self.jitter.is_zero() {
            write!(f, " ± {} ms jitter", ms(self.jitter))?;
        }
        match self.rate_bps {
            Some(bps) => write!(
                f,
                ", {} Mbit/s each way (buffer {} ms)",
                bps as f64 / 1e6,
                ms(self.buffer)
            )?,
            None => f.write_str(", no rate limit")?,
        }
        if self.loss > 0.0 {
            write!(f, ", {} % loss each way", self.loss * 100.0)?;
        }
        if self.reorder > 0.0 {
            write!(
                f,
                ", {} % of packets held back {} ms",
                self.reorder * 100.0,
                ms(self.reorder_gap)
            )?;
        }
        Ok(())
    }
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    /// Not one of the named profiles.
    #[error("unknown profile {0:?} (known: lan, wan20, lossy50)")]
    Unknown(String),
    /// A probability outside [0, 1].
    #[error("{name} must be a probability between 0 and 1, not {value}")]
    Probability { name: &'static str, value: f64 },
    /// A rate of zero would hold every packet forever.
    #[error("the rate must be above zero (leave it out for no limit)")]
    ZeroRate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles_parse_and_validate() {
        for n in Named::ALL {
            assert_eq!(n.name().parse::<Named>(), Ok(n));
            n.profile().validate().unwrap();
        }
        assert!(Named::Lan.profile().is_passthrough());
        assert!(!Named::Wan20.profile().is_passthrough());
        assert!(matches!(
            "wan".parse::<Named>(),
            Err(ProfileError::Unknown(_))
        ));
    }

    #[test]
    fn serialization_time_follows_the_rate() {
        // 1500 bytes at 200 Mbit/s: 60 µs.
        assert_eq!(
            Profile::WAN20.serialization(1500),
            Duration::from_micros(60)
        );
        assert_eq!(Profile::LAN.serialization(1500), Duration::ZERO);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let p = Profile {
            loss: 1.5,
            ..Profile::WAN20
        };
        assert!(matches!(
            p.validate(),
            Err(ProfileError::Probability { name: "loss", .. })
        ));
        let p = Profile {
            rate_bps: Some(0),
            ..Profile::WAN20
        };
        assert_eq!(p.validate(), Err(ProfileError::ZeroRate));
    }
}
