//! The CLI as a shell user meets it: completions in a real bash, man pages through `man`.

use std::process::Command;

use tether_e2e::{run, tether_bin, Tmux};

/// `bash` without start-up files, in tmux.
fn bash(path: &str) -> Tmux {
    shell(path, "bash", &["bash", "--norc", "--noprofile"])
}

/// A shell in tmux, with `path` as its PATH and the cluster's kubeconfig.
fn shell(path: &str, name: &str, argv: &[&str]) -> Tmux {
    let name = format!("tether-e2e-cli-{name}-{}", std::process::id());
    let path = format!("PATH={path}");
    let kubeconfig = format!("KUBECONFIG={}", tether_e2e::kubeconfig().display());
    let mut full = vec!["env", &path, &kubeconfig];
    full.extend_from_slice(argv);
    Tmux::run(&name, (200, 50), &full)
}

/// A directory with `tether` in it, as `cargo install` puts it on the PATH; and that PATH.
fn tether_on_path(shell: &str) -> (std::path::PathBuf, String) {
    let bin_dir =
        std::env::temp_dir().join(format!("tether-e2e-bin-{shell}-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    let link = bin_dir.join("tether");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(tether_bin(), &link).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (bin_dir, path)
}

#[test]
fn zsh_completes_commands_and_workload_names() {
    let (bin_dir, path) = tether_on_path("zsh");
    let shell = shell(&path, "zsh", &["zsh", "-f"]);
    shell.keys(&[
        "autoload -U compinit && compinit -u && source <(tether completion zsh)",
        "Enter",
    ]);
    shell.keys(&["tether inter", "Tab"]);
    shell.expect("tether intercept");
    shell.keys(&["C-u"]);
    shell.keys(&["tether intercept ord", "Tab"]);
    shell.expect("tether intercept orders");
    let _ = std::fs::remove_dir_all(&bin_dir);
}

#[test]
fn fish_completes_commands_and_workload_names() {
    let (bin_dir, path) = tether_on_path("fish");
    // fish answers `complete -C LINE` with the candidates it would offer, one per line.
    let complete = |line: &str| {
        run(Command::new("fish")
            .args(["--no-config", "-c"])
            .arg(format!(
                "tether completion fish | source; complete -C '{line}'"
            ))
            .env("PATH", &path)
            .env("KUBECONFIG", tether_e2e::kubeconfig()))
        .expect_ok("fish complete -C")
    };
    let commands = complete("tether inter");
    assert!(
        commands.lines().any(|l| l.starts_with("intercept")),
        "{commands}"
    );
    let workloads = complete("tether intercept ord");
    assert!(
        workloads.lines().any(|l| l.starts_with("orders")),
        "{workloads}"
    );
    let _ = std::fs::remove_dir_all(&bin_dir);
}

#[test]
fn bash_completes_tether_commands_and_flags() {
    let (bin_dir, path) = tether_on_path("bash");
    let shell = bash(&path);
    shell.keys(&["source <(tether completion bash)", "Enter"]);
    shell.keys(&["tether inter", "Tab"]);
    // capture-pane drops the space completion adds at the end of the line.
    shell.expect("tether intercept");
    shell.keys(&["--http-h", "Tab"]);
    shell.expect("tether intercept --http-header");
    shell.keys(&["C-u"]);
    // A workload's name comes from the cluster (the kubeconfig's context, namespace default).
    shell.keys(&["tether intercept ord", "Tab"]);
    shell.expect("tether intercept orders");
    let _ = std::fs::remove_dir_all(&bin_dir);
}

#[test]
fn man_renders_the_generated_pages() {
    let dir = std::env::temp_dir().join(format!("tether-e2e-man-{}", std::process::id()));
    run(Command::new(tether_bin()).arg("man").arg(&dir)).expect_ok("tether man");
    let page = run(Command::new("man")
        .arg("-l")
        .arg(dir.join("tether-intercept.1"))
        .env("MANPAGER", "cat")
        .env("COLUMNS", "100"))
    .expect_ok("man -l");
    assert!(page.contains("tether-intercept"), "{page}");
    assert!(page.contains("--http-header"), "{page}");
    let main = run(Command::new("man")
        .arg("-l")
        .arg(dir.join("tether.1"))
        .env("MANPAGER", "cat"))
    .expect_ok("man -l tether.1");
    assert!(main.contains("intercept"), "{main}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The config file fills in what the command line leaves to defaults: a flag wins, then its
/// environment variable, then the file. A broken file is an error naming it and its line, and
/// the command does nothing.
#[test]
fn the_config_file_gives_defaults_that_flags_and_the_environment_override() {
    let dir = std::env::temp_dir().join(format!("tether-e2e-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "install:\n  image: registry.example.com/platform/tether-agent:from-config\n",
    )
    .unwrap();
    let dry_run = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(tether_bin());
        cmd.args(["install", "--dry-run", "-o", "yaml"])
            .args(extra)
            .env("TETHER_CONFIG", &config)
            .env_remove("TETHER_AGENT_IMAGE");
        if let Some(image) = env {
            cmd.env("TETHER_AGENT_IMAGE", image);
        }
        run(&mut cmd)
    };
    let images = |yaml: &str| -> Vec<String> {
        yaml.lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .map(str::to_owned)
            .collect()
    };
    let out = dry_run(&[], None).expect_ok("install --dry-run with a config file");
    assert_eq!(
        images(&out),
        ["registry.example.com/platform/tether-agent:from-config"],
        "{out}"
    );
    let out =
        dry_run(&[], Some("env.example/tether-agent:from-env")).expect_ok("with the variable");
    assert_eq!(images(&out), ["env.example/tether-agent:from-env"]);
    let out = dry_run(
        &["--image", "flag.example/tether-agent:from-flag"],
        Some("env.example/x:1"),
    )
    .expect_ok("with the flag");
    assert_eq!(images(&out), ["flag.example/tether-agent:from-flag"]);

    // An unknown key: named with the file and its line; nothing printed, exit 1.
    std::fs::write(
        &config,
        "install:\n  image: a/b:1\nconnect:\n  transprt: udp\n",
    )
    .unwrap();
    let r = dry_run(&[], None);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.is_empty(),
        "nothing applied or printed: {}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&config.display().to_string())
            && r.stderr.contains("unknown field `transprt`")
            && r.stderr.contains("line 4"),
        "{}",
        r.stderr
    );
    // A TETHER_CONFIG that does not exist is an error too (a typo must not pass silently).
    std::fs::remove_file(&config).unwrap();
    let r = dry_run(&[], None);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains(&config.display().to_string()),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}
