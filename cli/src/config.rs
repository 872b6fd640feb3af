//! The config file: defaults a user would otherwise repeat on every command.
//!
//! `$TETHER_CONFIG`, else `$XDG_CONFIG_HOME/tether/config.yaml`, else
//! `~/.config/tether/config.yaml` (under `sudo`: the invoking user's home, not root's). A
//! missing default file is no config; a missing `$TETHER_CONFIG` is an error. Every key is
//! optional:
//!
//! ```yaml
//! install:
//!   image: registry.example.com/platform/tether-agent:0.1.0
//!   image-pull-secret: regcred
//! connect:
//!   namespace: shop
//!   transport: port-forward        # auto | udp | port-forward
//!   never-proxy: [10.10.0.0/16]
//!   also-proxy: [172.30.0.0/24]
//! intercept:
//!   http-header: [x-dev=alice]     # a personal intercept unless --http-header or --all-requests
//! doctor:
//!   timeout: 10                    # seconds per check (also gather-logs' per read)
//! manager:
//!   namespace: platform-tether     # where the traffic manager runs (default `tether`)
//! ```
//!
//! Precedence, as kubectl's family has it: a flag, then its environment variable
//! (`TETHER_AGENT_IMAGE`), then this file, then the built-in default. An unknown key or a
//! malformed value is an error naming the file, line and column, and the command does nothing.
//!
//! `connect` runs as root: it reads the file only if the invoking user owns it (never a link to
//! a file of root's, whose content an error message could show).

use std::path::{Path, PathBuf};

use clap::{parser::ValueSource, ArgMatches};
use ipnet::Ipv4Net;
use serde::Deserialize;
use tether_daemon::connect::Transport;

use crate::args::{Command, ConnectOptions};

/// The variable that names the config file.
pub const ENV: &str = "TETHER_CONFIG";

/// The whole file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub install: Install,
    #[serde(default)]
    pub connect: Connect,
    #[serde(default)]
    pub intercept: Intercept,
    #[serde(default)]
    pub doctor: Doctor,
    #[serde(default)]
    pub manager: Manager,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Install {
    pub image: Option<String>,
    pub image_pull_secret: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Connect {
    pub namespace: Option<String>,
    pub transport: Option<Transport>,
    #[serde(default)]
    pub never_proxy: Vec<Ipv4Net>,
    #[serde(default)]
    pub also_proxy: Vec<Ipv4Net>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Intercept {
    #[serde(default)]
    pub http_header: Vec<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Doctor {
    /// Seconds.
    pub timeout: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manager {
    /// The traffic manager's namespace.
    #[serde(default, deserialize_with = "namespace")]
    pub namespace: Option<String>,
}

/// A namespace name, or serde's error (which the file's line and column are added to).
fn namespace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    crate::args::parse_namespace(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// serde_yaml's message says where: `… at line 3 column 5`.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {why}; tether runs as root here and reads only a regular file of yours (uid {uid})")]
    NotYours {
        path: PathBuf,
        uid: u32,
        why: String,
    },
}

impl Config {
    /// Parses the file's text; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| {
            let mut message = e.to_string();
            // serde_yaml has no position for an unknown key at the top level: find its line.
            if !message.contains(" at line ") {
                if let Some(line) = unknown_key_line(&message, text) {
                    message.push_str(&format!(" at line {line}"));
                }
            }
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })
    }

    /// Reads this user's config file (see the module's doc for which and how).
    pub fn load() -> Result<Config, ConfigError> {
        let explicit = std::env::var_os(ENV).filter(|v| !v.is_empty());
        let invoking = if crate::local::is_root() {
            // Not fatal here: `connect` reports a broken SUDO_UID itself.
            tether_daemon::privileged::identity::from_system()
                .ok()
                .flatten()
        } else {
            None
        };
        let home = invoking
            .as_ref()
            .and_then(|id| id.env.iter().find(|(k, _)| k == "HOME"))
            .map(|(_, v)| PathBuf::from(v))
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from));
        // Under sudo, XDG_CONFIG_HOME (if it survived) is root's or the user's; only the
        // user's home is trusted to be theirs.
        let xdg = match invoking {
            Some(_) => None,
            None => std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        };
        let Some(path) = path(explicit.clone().map(PathBuf::from), xdg, home) else {
            return Ok(Config::default());
        };
        let owner = if crate::local::is_root() {
            Some(invoking.as_ref().map_or(0, |id| id.uid))
        } else {
            None
        };
        match read(&path, owner) {
            Ok(text) => Config::parse(&path, &text),
            Err(ConfigError::Read { source, .. })
                if explicit.is_none() && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Config::default())
            }
            Err(e) => Err(e),
        }
    }

    /// Puts this file's values where the command line left a built-in default (`matches`: what
    /// clap parsed, to tell a flag or variable from a default).
    pub fn apply(&self, command: &mut Command, matches: &ArgMatches) {
        let Some((_, m)) = matches.subcommand() else {
            return;
        };
        let defaulted = |id: &str| {
            !matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        if let Some(kube) = command.kube_mut() {
            if kube.manager_namespace.is_none() {
                kube.manager_namespace.clone_from(&self.manager.namespace);
            }
        }
        match command {
            Command::Install {
                image,
                image_pull_secret,
                ..
            } => {
                if let (true, Some(v)) = (defaulted("image"), &self.install.image) {
                    v.clone_into(image);
                }
                if image_pull_secret.is_none() {
                    image_pull_secret.clone_from(&self.install.image_pull_secret);
                }
            }
            Command::Connect(args) => {
                if args.namespace.is_none() {
                    args.namespace.clone_from(&self.connect.namespace);
                }
                self.connect_options(&mut args.options, &defaulted);
            }
            Command::Intercept(args) => {
                // Only for connecting first: when connected, `-n` must be the connected one.
                args.config_namespace.clone_from(&self.connect.namespace);
                self.connect_options(&mut args.connect, &defaulted);
                if args.http_header.is_empty() && !args.all_requests && !args.replace {
                    args.http_header.clone_from(&self.intercept.http_header);
                }
            }
            Command::Doctor(args) => {
                if let (true, Some(t)) = (defaulted("timeout"), self.doctor.timeout) {
                    args.timeout = t;
                }
            }
            Command::GatherLogs(args) => {
                if let (true, Some(t)) = (defaulted("timeout"), self.doctor.timeout) {
                    args.timeout = t;
                }
            }
            _ => {}
        }
    }
}

impl Config {
    /// The `connect` section's defaults for what the command line left out.
    fn connect_options(&self, options: &mut ConnectOptions, defaulted: &dyn Fn(&str) -> bool) {
        let c = &self.connect;
        if let (true, Some(t)) = (defaulted("transport"), c.transport) {
            options.transport = t;
        }
        if options.never_proxy.is_empty() {
            options.never_proxy.clone_from(&c.never_proxy);
        }
        if options.also_proxy.is_empty() {
            options.also_proxy.clone_from(&c.also_proxy);
        }
    }
}

/// The line (from 1) of the key an "unknown field `KEY`" message names, if one line starts
/// with it.
fn unknown_key_line(message: &str, text: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|i| i + 1)
}

/// Which file: `explicit` (`$TETHER_CONFIG`), else under `xdg` (`$XDG_CONFIG_HOME`), else
/// under `home`.
pub fn path(
    explicit: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    explicit.or_else(|| {
        xdg.filter(|x| x.is_absolute())
            .or_else(|| home.map(|h| h.join(".config")))
            .map(|dir| dir.join("tether/config.yaml"))
    })
}

/// Reads `path`; with `owner`, only if it is a regular file (not a link) that `owner` owns.
fn read(path: &Path, owner: Option<u32>) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let io = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let Some(uid) = owner else {
        return std::fs::read_to_string(path).map_err(io);
    };
    let refuse = |why: &str| ConfigError::NotYours {
        path: path.to_owned(),
        uid,
        why: why.to_owned(),
    };
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    if !link.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    // The file opened must be the one checked: not swapped for a link in between.
    if (opened.dev(), opened.ino()) != (link.dev(), link.ino()) {
        return Err(refuse("it changed while being opened"));
    }
    if opened.uid() != uid {
        return Err(refuse(&format!("owned by uid {}", opened.uid())));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
