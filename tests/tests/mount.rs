//! `tether intercept … --mount`: the intercepted container's volumes on the laptop, read and
//! written with ordinary tools, and gone when the intercept, the command or the daemon is.
//!
//! Everything on the workstation runs in its persistent mount namespace ([`on_workstation`]),
//! as the programs of one laptop share its mounts. The workload is `files`
//! (`deploy/sample/files.yaml`): a ConfigMap, a Secret, an emptyDir and the service-account
//! token.

use std::time::Duration;

use serde_json::Value;
use tether_e2e::{
    eventually, kubectl, on_workstation, run, sh_on_workstation, tether_on_workstation, WS,
};

/// Connected on the workstation's mount namespace; quits (and says if quitting failed) on drop.
struct Connected;

impl Connected {
    fn new() -> Connected {
        let _ = tether_on_workstation(WS, &["quit"]);
        tether_on_workstation(WS, &["connect"]).expect_ok("tether connect");
        Connected
    }

    fn status(&self) -> Value {
        let out = tether_on_workstation(WS, &["status", "-o", "json"]).expect_ok("tether status");
        serde_json::from_str(&out).expect("status JSON")
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let _ = tether_on_workstation(WS, &["quit"]);
    }
}

/// `sh -c SCRIPT` on the workstation, asserting success; its stdout.
#[track_caller]
fn sh(script: &str) -> String {
    sh_on_workstation(WS, script).expect_ok(script)
}

/// `busybox ARGS` in the pod's app container.
#[track_caller]
fn in_pod(pod: &str, args: &[&str]) -> String {
    let mut full = vec!["exec", pod, "-c", "app", "--", "busybox"];
    full.extend_from_slice(args);
    kubectl(&full).expect_ok(&format!("busybox {args:?} in {pod}"))
}

/// The tether FUSE mounts the workstation has.
fn fuse_mounts() -> Vec<String> {
    sh("cat /proc/self/mountinfo")
        .lines()
        .filter(|l| l.contains(" - fuse.tether ") || l.contains(" - fuse tether "))
        .map(|l| l.split(' ').nth(4).unwrap_or_default().to_owned())
        .collect()
}

fn intercept(args: &[&str]) -> Value {
    let mut full = vec!["intercept", "files", "-o", "json"];
    full.extend_from_slice(args);
    let out = tether_on_workstation(WS, &full).expect_ok("tether intercept files");
    serde_json::from_str(&out).expect("intercept JSON")
}

fn sha256(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_containers_volumes_are_read_and_written_from_the_laptop() {
    let _c = Connected::new();
    let dir = "/tmp/tether-e2e-files";
    sh(&format!("rm -rf {dir} && mkdir {dir}"));
    let report = intercept(&["--port", "18095", &format!("--mount={dir}")]);
    let mount = &report["intercept"]["mount"];
    assert_eq!(mount["dir"], dir, "{report}");
    let pod = mount["pod"].as_str().expect("the pod").to_owned();
    let volumes: Vec<&str> = mount["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        volumes,
        [
            "/data",
            "/etc/files",
            "/etc/secret",
            "/etc/single/features.txt",
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ],
        "{report}"
    );
    assert_eq!(fuse_mounts(), [dir]);
    // An earlier run's files, if the agent (and so the pod and its emptyDir) stayed.
    in_pod(&pod, &["sh", "-c", "rm -rf /data/*"]);

    // The ConfigMap and the Secret as the app reads them.
    assert_eq!(
        sh(&format!("cat {dir}/etc/files/app.yaml")),
        "listen: 8080\ngreeting: hello from the files ConfigMap\n"
    );
    assert_eq!(
        sh(&format!("cat {dir}/etc/secret/api-token")),
        "s3cr3t-token-for-files"
    );
    // A single key mounted as a file (`subPath`): that file, alone in its directory.
    assert_eq!(
        sh(&format!(
            "ls {dir}/etc/single; cat {dir}/etc/single/features.txt"
        )),
        "features.txt\nfast-checkout\ngift-cards\n"
    );
    // The service-account token the kubelet gave this pod.
    let token = in_pod(
        &pod,
        &["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
    );
    assert!(token.len() > 100, "a token: {token}");
    let sa = format!("{dir}/var/run/secrets/kubernetes.io/serviceaccount");
    assert_eq!(sh(&format!("cat {sa}/token")), token);
    assert_eq!(sh(&format!("cat {sa}/namespace")), "default");

    // 50 MiB the app wrote, byte for byte (sha256), by two readers at once.
    in_pod(
        &pod,
        &[
            "dd",
            "if=/dev/urandom",
            "of=/data/big.bin",
            "bs=1048576",
            "count=50",
        ],
    );
    let in_the_pod = sha256(&in_pod(&pod, &["sha256sum", "/data/big.bin"]));
    let both = sh(&format!(
        "sha256sum {dir}/data/big.bin > /tmp/tether-e2e-sum1 & \
         sha256sum {dir}/data/big.bin > /tmp/tether-e2e-sum2; wait; \
         cat /tmp/tether-e2e-sum1 /tmp/tether-e2e-sum2"
    ));
    let sums: Vec<String> = both.lines().map(sha256).collect();
    assert_eq!(sums, [in_the_pod.clone(), in_the_pod.clone()], "{both}");
    // `tether top` counts what the mount asked of the pod (the two readers share the page
    // cache: at least the file once).
    let top = tether_on_workstation(WS, &["top", "--once", "-o", "json"]).expect_ok("tether top");
    let top: Value = serde_json::from_str(&top).expect("top JSON");
    let files = &top["intercepts"][0]["files"];
    assert!(
        files["read_bytes"].as_u64().unwrap_or(0) >= 50 << 20,
        "{top}"
    );
    assert!(files["ops"].as_u64().unwrap_or(0) >= 100, "{top}");
    assert!(files["p99_ms"].as_f64().is_some(), "{top}");
    assert_eq!(
        sh(&format!("stat -c '%s %F' {dir}/data/big.bin")),
        "52428800 regular file\n"
    );

    // A file written on the laptop is in the pod; mv and truncate are the pod's too.
    sh(&format!("echo written on the laptop > {dir}/data/note.txt"));
    assert_eq!(
        in_pod(&pod, &["cat", "/data/note.txt"]),
        "written on the laptop\n"
    );
    sh(&format!("mv {dir}/data/note.txt {dir}/data/moved.txt"));
    assert_eq!(
        in_pod(&pod, &["ls", "/data"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["big.bin", "moved.txt"]
    );
    sh(&format!("truncate -s 7 {dir}/data/moved.txt"));
    assert_eq!(in_pod(&pod, &["cat", "/data/moved.txt"]), "written");
    sh(&format!("mkdir {dir}/data/sub && touch {dir}/data/sub/a"));
    assert_eq!(
        sh(&format!("cd {dir}/data && find . -type f | sort")),
        "./big.bin\n./moved.txt\n./sub/a\n"
    );
    // `ls -la` of a ConfigMap volume: the kubelet's projection, symbolic links included.
    let listing = sh(&format!("ls -la {dir}/etc/files"));
    assert!(listing.contains("app.yaml -> ..data/app.yaml"), "{listing}");
    assert!(listing.contains("..data -> ..20"), "{listing}");

    // A file open on the laptop is still itself once its name is gone: `fstat` (`wc -c` of a
    // regular file asks it for the size) and reads go by the open file, not by the name.
    let kept = sh(&format!(
        "f={dir}/data/scratch; printf 'twelve bytes' > $f; exec 3< $f 4< $f; rm $f; \
         wc -c <&3; cat <&4"
    ));
    assert_eq!(kept, "12\ntwelve bytes", "{kept}");
    // The same when the app renames it in the pod.
    let renamed = on_workstation(WS, "sh")
        .args([
            "-c",
            &format!("exec 3< {dir}/data/moved.txt; sleep 3; wc -c <&3"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh on the workstation");
    std::thread::sleep(Duration::from_secs(1));
    in_pod(&pod, &["mv", "/data/moved.txt", "/data/renamed.txt"]);
    let out = renamed.wait_with_output().expect("wc");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7\n");
    in_pod(&pod, &["mv", "/data/renamed.txt", "/data/moved.txt"]);

    // A directory larger than one answer of the file protocol holds (6,000 names of 200
    // bytes) is listed whole.
    in_pod(
        &pod,
        &[
            "sh",
            "-c",
            "mkdir /data/many && cd /data/many && i=0; \
             while [ $i -lt 6000 ]; do : > $(printf '%04d%0200d' $i 0); i=$((i+1)); done",
        ],
    );
    assert_eq!(sh(&format!("ls {dir}/data/many | wc -l")).trim(), "6000");
    assert_eq!(
        sh(&format!("ls {dir}/data/many | tail -1")).trim(),
        format!("5999{}", "0".repeat(200))
    );
    in_pod(&pod, &["rm", "-rf", "/data/many"]);

    // The Secret is mounted read-only in the app container: so it is here.
    let refused = sh_on_workstation(WS, &format!("echo x > {dir}/etc/secret/new"));
    assert!(
        !refused.ok && refused.stderr.contains("Read-only file system"),
        "{refused:?}"
    );

    // Leaving unmounts; the user's directory stays, empty.
    tether_on_workstation(WS, &["leave", "files"]).expect_ok("tether leave");
    assert_eq!(fuse_mounts(), Vec::<String>::new());
    assert_eq!(sh(&format!("ls -A {dir}")), "");
    sh(&format!("rmdir {dir}"));
}

#[test]
fn the_mount_ends_with_the_command_and_when_the_daemon_or_helper_is_killed() {
    let c = Connected::new();

    // `-- CMD` reads through TETHER_ROOT; when it ends, so does the mount (and its temporary
    // directory).
    let out = run(on_workstation(WS, tether_e2e::tether_bin())
        .args(["intercept", "files", "--port", "18096", "--", "sh", "-c"])
        .arg("echo \"$TETHER_ROOT\"; cat \"$TETHER_ROOT/etc/files/features.txt\"")
        .env("TETHER_RUNTIME_DIR", tether_e2e::runtime_dir(WS))
        .env("KUBECONFIG", tether_e2e::kubeconfig()))
    .expect_ok("tether intercept -- sh");
    let root = out
        .lines()
        .find(|l| l.starts_with("/tmp/tether-mount-"))
        .unwrap_or_else(|| panic!("TETHER_ROOT in {out}"))
        .to_owned();
    assert!(out.contains("fast-checkout\ngift-cards\n"), "{out}");
    assert_eq!(fuse_mounts(), Vec::<String>::new());
    assert!(
        !sh_on_workstation(WS, &format!("test -e {root}")).ok,
        "{root} removed"
    );

    // `kill -9` of the daemon: the helper unmounts at once.
    let report = intercept(&["--port", "18096"]);
    let root = report["intercept"]["mount"]["dir"]
        .as_str()
        .expect("a mount")
        .to_owned();
    assert_eq!(fuse_mounts(), [root.as_str()]);
    let daemon = c.status()["daemon_pid"].as_u64().expect("daemon pid");
    run(std::process::Command::new("kill").args(["-9", &daemon.to_string()]));
    eventually(Duration::from_secs(10), "the mount to go", || {
        fuse_mounts().is_empty().then_some(())
    });
    // Never "Transport endpoint is not connected": the directory is gone with its mount.
    let ls = sh_on_workstation(WS, &format!("ls {root}"));
    assert!(
        !ls.stderr.contains("not connected")
            && !sh_on_workstation(WS, &format!("test -e {root}")).ok,
        "{ls:?}"
    );

    // `kill -9` of the helper (the daemon dies with it): nobody unmounts until `tether quit`,
    // which does.
    drop(c);
    let c = Connected::new();
    // The killed daemon's session (and its intercept) lasts at the manager until its QUIC
    // connection times out.
    let report = eventually(
        Duration::from_secs(30),
        "the killed daemon's intercept to end",
        || {
            let out =
                tether_on_workstation(WS, &["intercept", "files", "--port", "18096", "-o", "json"]);
            serde_json::from_str::<Value>(&out.stdout).ok()
        },
    );
    let root = report["intercept"]["mount"]["dir"]
        .as_str()
        .expect("a mount")
        .to_owned();
    let helper = c.status()["privileged_pid"].as_u64().expect("helper pid");
    std::mem::forget(c);
    run(std::process::Command::new("kill").args(["-9", &helper.to_string()]));
    eventually(
        Duration::from_secs(10),
        "the daemon to die with its helper",
        || {
            let out = tether_on_workstation(WS, &["status", "-o", "json"]).stdout;
            let status: Value = serde_json::from_str(&out).ok()?;
            (status["connected"] == false).then_some(())
        },
    );
    let quit = tether_on_workstation(WS, &["quit"]).expect_ok("tether quit");
    assert!(quit.contains("unmounted the FUSE mount"), "{quit}");
    assert_eq!(fuse_mounts(), Vec::<String>::new());
    assert!(!sh_on_workstation(WS, &format!("test -e {root}")).ok);
}

/// The workstation's interface towards the host (see `xtask/scripts/workstation.sh`).
const WS_DEV: &str = "tws0";

#[test]
fn files_open_across_a_reconnect_are_read_and_written_after_it() {
    let c = Connected::new();
    let report = intercept(&["--port", "18096"]);
    let mount = &report["intercept"]["mount"];
    let root = mount["dir"].as_str().expect("a mount").to_owned();
    let pod = mount["pod"].as_str().expect("the pod").to_owned();
    in_pod(
        &pod,
        &[
            "sh",
            "-c",
            "printf 'one\\n' > /data/across-in; : > /data/across-out",
        ],
    );

    // A process on the laptop holds a file of the pod open for reading (as `tail -f` does) and
    // one for appending, uses each, and uses them again when told to.
    let ready = "/tmp/tether-e2e-across-ready";
    let go = "/tmp/tether-e2e-across-go";
    sh(&format!("rm -f {ready} {go}"));
    let script = format!(
        "exec 3< {root}/data/across-in 4>> {root}/data/across-out
         cat <&3; echo before >&4; touch {ready}
         while [ ! -e {go} ]; do sleep 0.2; done
         cat <&3; echo after >&4"
    );
    let holder = on_workstation(WS, "sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sh on the workstation");
    eventually(Duration::from_secs(30), "the files to be open", || {
        sh_on_workstation(WS, &format!("test -e {ready}"))
            .ok
            .then_some(())
    });

    // The link drops for longer than the tunnel's idle timeout: the session reconnects, the
    // intercept is made again, and the mount's file stream with it. Meanwhile the app appends.
    let reconnects = c.status()["reconnects"].as_u64().unwrap_or(0);
    let down = tether_e2e::network::LinkDown::new(WS, WS_DEV);
    std::thread::sleep(Duration::from_secs(15));
    in_pod(&pod, &["sh", "-c", "printf 'two\\n' >> /data/across-in"]);
    drop(down);
    eventually(Duration::from_secs(60), "the session to reconnect", || {
        let s = c.status();
        (s["connected"] == true && s["reconnects"].as_u64().unwrap_or(0) > reconnects).then_some(())
    });
    eventually(Duration::from_secs(60), "the mount to answer again", || {
        sh_on_workstation(WS, &format!("cat {root}/etc/files/features.txt"))
            .ok
            .then_some(())
    });

    // The same descriptors go on: the reader gets what the app appended, the writer appends.
    sh(&format!("touch {go}"));
    let out = holder.wait_with_output().expect("the holder");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert_eq!(stdout, "one\ntwo\n", "{stderr}");
    assert_eq!(
        in_pod(&pod, &["cat", "/data/across-out"]),
        "before\nafter\n"
    );
    sh(&format!("rm -f {ready} {go}"));
}
