use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::args::Cli;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/home/a/.config/tether/config.yaml"), text)
}

/// `argv` parsed as `main` does, with `config` applied.
fn cli(argv: &[&str], config: &Config) -> Command {
    let matches = Cli::command().try_get_matches_from(argv).unwrap();
    let mut cli = Cli::from_arg_matches(&matches).unwrap();
    config.apply(&mut cli.command, &matches);
    cli.command
}

const FULL: &str = "\
install:
  image: registry.example.com/platform/tether-agent:0.1.0
  image-pull-secret: regcred
connect:
  namespace: shop
  transport: port-forward
  never-proxy: [10.10.0.0/16]
  also-proxy: [172.30.0.0/24]
intercept:
  http-header: [x-dev=alice]
doctor:
  timeout: 10
manager:
  namespace: platform-tether
";

#[test]
fn every_key_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(
        c.install.image.as_deref(),
        Some("registry.example.com/platform/tether-agent:0.1.0")
    );
    assert_eq!(c.install.image_pull_secret.as_deref(), Some("regcred"));
    assert_eq!(c.connect.namespace.as_deref(), Some("shop"));
    assert_eq!(c.connect.transport, Some(Transport::PortForward));
    assert_eq!(c.connect.never_proxy, ["10.10.0.0/16".parse().unwrap()]);
    assert_eq!(c.connect.also_proxy, ["172.30.0.0/24".parse().unwrap()]);
    assert_eq!(c.intercept.http_header, ["x-dev=alice"]);
    assert_eq!(c.doctor.timeout, Some(10));
    assert_eq!(c.manager.namespace.as_deref(), Some("platform-tether"));
    assert_eq!(parse("").unwrap(), Config::default());
    assert_eq!(parse("# nothing yet\n").unwrap(), Config::default());
}

#[test]
fn unknown_keys_and_bad_values_name_the_file_and_line() {
    for (text, says) in [
        ("connect:\n  transprt: udp\n", "unknown field `transprt`"),
        ("connect:\n  transport: carrier-pigeon\n", "carrier-pigeon"),
        ("connect:\n  never-proxy: [10.0.0.0/33]\n", "never-proxy"),
        ("doctor:\n  timeout: soon\n", "timeout"),
        ("manager:\n  namespace: Tether_NS\n", "not a namespace name"),
        ("images: {}\n", "unknown field `images`"),
        ("install:\n  image: [a\n", "line"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(
            e.starts_with("config file /home/a/.config/tether/config.yaml: "),
            "{text:?}: {e}"
        );
        assert!(e.contains(says), "{text:?}: {e}");
        assert!(e.contains("line "), "{text:?}: {e}");
    }
}

#[test]
fn which_file() {
    let p = |e: Option<&str>, x: Option<&str>, h: Option<&str>| {
        path(
            e.map(PathBuf::from),
            x.map(PathBuf::from),
            h.map(PathBuf::from),
        )
    };
    assert_eq!(
        p(Some("/etc/tether.yml"), Some("/x"), Some("/home/a")),
        Some("/etc/tether.yml".into())
    );
    assert_eq!(
        p(None, Some("/x"), Some("/home/a")),
        Some("/x/tether/config.yaml".into())
    );
    assert_eq!(
        p(None, Some("relative"), Some("/home/a")),
        Some("/home/a/.config/tether/config.yaml".into())
    );
    assert_eq!(
        p(None, None, Some("/home/a")),
        Some("/home/a/.config/tether/config.yaml".into())
    );
    assert_eq!(p(None, None, None), None);
}

#[test]
fn flags_then_environment_then_file_then_default() {
    let config = parse(FULL).unwrap();
    // The file fills what was left to defaults.
    let Command::Install {
        image,
        image_pull_secret,
        ..
    } = cli(&["tether", "install"], &config)
    else {
        panic!()
    };
    assert_eq!(image, "registry.example.com/platform/tether-agent:0.1.0");
    assert_eq!(image_pull_secret.as_deref(), Some("regcred"));
    // A flag wins.
    let Command::Install { image, .. } = cli(&["tether", "install", "--image", "x/y:1"], &config)
    else {
        panic!()
    };
    assert_eq!(image, "x/y:1");
    // No file: the built-in default.
    let Command::Install { image, .. } = cli(&["tether", "install"], &Config::default()) else {
        panic!()
    };
    assert_eq!(image, crate::args::DEFAULT_IMAGE);

    let Command::Connect(c) = cli(&["tether", "connect"], &config) else {
        panic!()
    };
    assert_eq!(c.namespace.as_deref(), Some("shop"));
    assert_eq!(c.options.transport, Transport::PortForward);
    assert_eq!(c.options.never_proxy, config.connect.never_proxy);
    assert_eq!(c.options.also_proxy, config.connect.also_proxy);
    let Command::Connect(c) = cli(
        &[
            "tether",
            "connect",
            "-n",
            "dev",
            "--transport",
            "auto",
            "--never-proxy",
            "10.20.0.0/16",
        ],
        &config,
    ) else {
        panic!()
    };
    assert_eq!(c.namespace.as_deref(), Some("dev"));
    assert_eq!(
        c.options.transport,
        Transport::Auto,
        "given explicitly, even as the default"
    );
    assert_eq!(c.options.never_proxy, ["10.20.0.0/16".parse().unwrap()]);

    let Command::Intercept(i) = cli(&["tether", "intercept", "orders", "-p", "8080"], &config)
    else {
        panic!()
    };
    assert_eq!(i.http_header, ["x-dev=alice"], "personal by default");
    // Connecting first takes the connect section's defaults; `-n` is left alone.
    assert_eq!(i.connect.transport, Transport::PortForward);
    assert_eq!(i.connect.never_proxy, config.connect.never_proxy);
    assert_eq!(i.config_namespace.as_deref(), Some("shop"));
    assert_eq!(i.namespace, None);
    let Command::Intercept(i) = cli(
        &[
            "tether",
            "intercept",
            "orders",
            "-p",
            "8080",
            "--all-requests",
        ],
        &config,
    ) else {
        panic!()
    };
    assert!(i.http_header.is_empty(), "--all-requests takes everything");
    let Command::Intercept(i) = cli(
        &[
            "tether",
            "intercept",
            "orders",
            "-p",
            "8080",
            "--http-header",
            "x-dev=bob",
        ],
        &config,
    ) else {
        panic!()
    };
    assert_eq!(i.http_header, ["x-dev=bob"]);

    let Command::Doctor(d) = cli(&["tether", "doctor"], &config) else {
        panic!()
    };
    assert_eq!(d.timeout, 10);
    let Command::Doctor(d) = cli(&["tether", "doctor", "--timeout", "5"], &config) else {
        panic!()
    };
    assert_eq!(d.timeout, 5);
}

#[test]
fn as_root_only_a_regular_file_of_the_invoking_user_is_read() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("tether-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, "doctor:\n  timeout: 3\n").unwrap();
    let me = std::fs::metadata(&file).unwrap().uid();
    assert_eq!(read(&file, Some(me)).unwrap(), "doctor:\n  timeout: 3\n");
    // Someone else's file (root's, say): refused, and nothing of it is shown.
    let e = read(&file, Some(me + 1)).unwrap_err().to_string();
    assert!(e.contains(&format!("owned by uid {me}")), "{e}");
    // The attack: a link to a file the user may not read (root's /etc/shadow) is refused
    // before it is opened, whoever owns the target.
    let link = dir.join("link.yaml");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let e = read(&link, Some(me)).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    // Not root: the user reads their own files with their own rights, links included.
    assert!(read(&link, None).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_manager_namespace_comes_from_flag_then_environment_then_file() {
    let config = parse(FULL).unwrap();
    let manager_ns = |argv: &[&str], config: &Config| {
        let mut command = cli(argv, config);
        command.kube_mut().unwrap().manager_namespace().to_owned()
    };
    // Every command that reaches the cluster gets the file's namespace.
    for argv in [
        &["tether", "install"][..],
        &["tether", "uninstall", "--manager"],
        &["tether", "connect"],
        &["tether", "doctor"],
        &["tether", "gather-logs"],
    ] {
        assert_eq!(manager_ns(argv, &config), "platform-tether", "{argv:?}");
        assert_eq!(manager_ns(argv, &Config::default()), "tether", "{argv:?}");
    }
    assert_eq!(
        manager_ns(
            &["tether", "connect", "--manager-namespace", "ops"],
            &config
        ),
        "ops"
    );
    // A bad name is refused by the parser, before anything reaches the cluster.
    let bad =
        Cli::command().try_get_matches_from(["tether", "install", "--manager-namespace", "Ops"]);
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("not a namespace name"));
}
