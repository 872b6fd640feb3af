//! Installing the traffic manager the way platform teams do: `kubectl apply -k` of the kustomize
//! base in `deploy/manager` is exactly `tether install`, and `tether install --dry-run` prints
//! manifests the API server accepts.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;
use tether_e2e::{
    cluster_ip, curl, kubectl, manager_image, manager_pods, manager_rollout, repo, run, tether,
    tether_bin, Connected, WS,
};

/// Objects by `kind/namespace/name`.
fn by_identity(objects: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|o| {
            let key = format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, o)
        })
        .collect()
}

/// A YAML stream's documents.
fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `tether install --dry-run ARGS` on the host (no cluster needed).
fn dry_run(args: &[&str]) -> String {
    run(Command::new(tether_bin())
        .args(["install", "--dry-run"])
        .args(args))
    .expect_ok("tether install --dry-run")
}

#[test]
fn kubectl_apply_k_installs_what_tether_install_installs() {
    let image = manager_image();
    let (name, tag) = image.rsplit_once(':').expect("an image with a tag");
    // An overlay that sets the image, as a platform team's would; inside the repository, since
    // kustomize reads bases by relative path.
    let overlay = repo().join("target/e2e-kustomize");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "resources:\n  - ../../deploy/manager\nimages:\n  - name: tether.local/tether-agent\n    \
             newName: {name}\n    newTag: {tag}\n"
        ),
    )
    .unwrap();
    let overlay_dir = overlay.to_str().unwrap();

    let kustomized = kubectl(&["kustomize", overlay_dir]).expect_ok("kubectl kustomize");
    let kustomized = by_identity(yaml_documents(&kustomized));
    let installed: Value =
        serde_json::from_str(&dry_run(&["-o", "json", "--image", &image])).expect("a JSON List");
    let installed = by_identity(installed["items"].as_array().expect("items").clone());
    assert_eq!(
        kustomized.keys().collect::<Vec<_>>(),
        installed.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (key, object) in &installed {
        assert_eq!(&kustomized[key], object, "{key}");
    }

    // An overlay that moves it to another namespace is `install --manager-namespace`.
    let moved = repo().join("target/e2e-kustomize-namespace");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::write(
        moved.join("kustomization.yaml"),
        format!(
            "resources:\n  - ../../deploy/manager\nnamespace: platform-tether\nimages:\n  - name: \
             tether.local/tether-agent\n    newName: {name}\n    newTag: {tag}\n"
        ),
    )
    .unwrap();
    let kustomized = kubectl(&["kustomize", moved.to_str().unwrap()]).expect_ok("kustomize");
    let kustomized = by_identity(yaml_documents(&kustomized));
    let installed: Value = serde_json::from_str(&dry_run(&[
        "-o",
        "json",
        "--image",
        &image,
        "--manager-namespace",
        "platform-tether",
    ]))
    .expect("a JSON List");
    let installed = by_identity(installed["items"].as_array().expect("items").clone());
    assert!(
        installed.contains_key("Namespace//platform-tether"),
        "{:?}",
        installed.keys()
    );
    assert_eq!(
        kustomized.keys().collect::<Vec<_>>(),
        installed.keys().collect::<Vec<_>>(),
        "the same objects, moved"
    );
    for (key, object) in &installed {
        assert_eq!(&kustomized[key], object, "{key}");
    }

    // Applied over the installed manager it changes nothing a session needs.
    kubectl(&["apply", "-k", overlay_dir]).expect_ok("kubectl apply -k");
    manager_rollout().expect_ok("the manager is available");
    let _ws = Connected::new(WS, &[]);
    let url = format!("http://{}/", cluster_ip("hello"));
    curl(Some(WS), &[&url]).expect_ok("hello through tether after apply -k");

    // The example overlay renders with its registry and pull secret.
    let example = repo().join("deploy/overlays/private-registry");
    let rendered = kubectl(&["kustomize", example.to_str().unwrap()]).expect_ok("example overlay");
    let rendered = by_identity(yaml_documents(&rendered));
    let pod = &rendered["Deployment/tether/tether-manager"]["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com/platform/tether-agent:0.1.0"
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
}

#[test]
fn install_dry_run_passes_the_api_servers_dry_run() {
    let manifests = dry_run(&["-o", "yaml", "--image-pull-secret", "regcred"]);
    let mut apply = Command::new("kubectl")
        .args(["apply", "--dry-run=server", "-f", "-"])
        .env("KUBECONFIG", tether_e2e::kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    let out = apply.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deployment.apps/tether-manager") && stdout.contains("(server dry run)"),
        "{stdout}"
    );
}

/// The monitoring examples that need no CRDs pass the API server's validation where the README
/// says to apply them (the NetworkPolicy's named ports are the manager's).
#[test]
fn the_metrics_network_policy_passes_the_api_servers_dry_run() {
    let policy = tether_e2e::repo().join("deploy/monitoring/networkpolicy.yaml");
    let out = tether_e2e::kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        "tether",
        "-f",
        policy.to_str().unwrap(),
    ])
    .expect_ok("kubectl apply --dry-run=server the NetworkPolicy");
    assert!(
        out.contains("networkpolicy.networking.k8s.io/tether-manager-metrics"),
        "{out}"
    );
    let manifests = dry_run(&["-o", "yaml"]);
    for port in ["name: quic", "name: health", "name: tether-metrics"] {
        assert!(manifests.contains(port), "the manager has no port {port}");
    }
}

/// The README's "try it yourself" by hand: `eval $(cargo xtask cluster env)` sets everything a
/// plain `tether install` needs on the local cluster (`cluster.sh env` is what that runs).
#[test]
fn cluster_env_is_enough_for_a_plain_tether_install() {
    let script = format!(
        "eval \"$(bash {}/xtask/scripts/cluster.sh env)\" && {} install",
        repo().display(),
        tether_bin().display()
    );
    let out = run(Command::new("bash")
        .args(["-c", &script])
        .env_remove("KUBECONFIG")
        .env_remove("TETHER_AGENT_IMAGE"))
    .expect_ok("tether install after cluster env");
    assert!(out.contains("Traffic manager installed"), "{out}");
    // Not a terminal: progress is plain lines on stderr, stdout keeps only the result.
    assert!(!out.contains("applying"), "{out}");

    // On a terminal (a pseudo-terminal by `script`): indicatif's spinner line names each step
    // and is cleared before the result.
    let on_tty = run(Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .env_remove("KUBECONFIG")
        .env_remove("TETHER_AGENT_IMAGE"))
    .expect_ok("tether install on a terminal");
    assert!(
        on_tty.contains(" applying deployments tether-manager…"),
        "{on_tty:?}"
    );
    assert!(
        on_tty.contains("\r\x1b[2KTraffic manager installed"),
        "the line is cleared before the result: {on_tty:?}"
    );
    let recorded = std::fs::read_to_string(tether_e2e::state_dir().join("images.env")).unwrap();
    assert!(
        recorded.contains(&format!("TETHER_AGENT_IMAGE={}\n", manager_image())),
        "{recorded}"
    );
}

/// The local cluster gets its images as any cluster does: from a registry (Debian's
/// docker-registry), which holds this build's images with their OCI labels.
#[test]
fn the_cluster_pulls_its_images_from_a_registry() {
    let image = manager_image();
    let (name, tag) = image.rsplit_once(':').expect("a tagged image");
    let repo_name = name
        .strip_prefix("tether.local/")
        .expect("a tether.local image");
    let tags = run(Command::new("curl").args([
        "-fsS",
        &format!("http://127.0.0.1:5000/v2/{repo_name}/tags/list"),
    ]))
    .expect_ok("the registry's tags");
    assert!(tags.contains(&format!("\"{tag}\"")), "{tags}");
    let config = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://127.0.0.1:5000/{repo_name}:{tag}"),
    ]))
    .expect_ok("the image's config");
    let config: Value = serde_json::from_str(&config).expect("config JSON");
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .map(str::len),
        Some(40),
        "{labels}"
    );
    // The manager's pod runs what the registry served (containerd records the repo digest).
    let image_id = manager_pods("jsonpath={.items[0].status.containerStatuses[0].imageID}")
        .expect_ok("the manager's imageID");
    assert!(
        image_id.starts_with(&format!("{name}@sha256:")),
        "{image_id}"
    );
}

/// Reinstalls the manager with the image it had; on drop, so a failing test restores it too.
struct RestoreManager(String);

impl Drop for RestoreManager {
    fn drop(&mut self) {
        let _ = run(Command::new(tether_bin())
            .args(["install", "--image", &self.0, "--kubeconfig"])
            .arg(tether_e2e::kubeconfig()));
    }
}

/// An image the cluster cannot pull fails the install at once, naming the image and the pull's
/// error, instead of waiting for a pod that never starts.
#[test]
fn an_image_the_cluster_cannot_pull_fails_the_install_with_the_pull_error() {
    let _restore = RestoreManager(manager_image());
    let missing = "tether.local/tether-agent:no-such-tag";
    let out = run(Command::new(tether_bin())
        .args(["install", "--image", missing, "--kubeconfig"])
        .arg(tether_e2e::kubeconfig()));
    assert!(!out.ok, "{out:?}");
    assert!(
        out.stderr.contains(missing)
            && (out.stderr.contains("ErrImagePull") || out.stderr.contains("ImagePullBackOff")),
        "{out:?}"
    );
}

/// Uninstalls the manager from `0` on drop (before [`RestoreManager`] puts the default back).
struct UninstallFrom(&'static str);

impl Drop for UninstallFrom {
    fn drop(&mut self) {
        let _ = run(Command::new(tether_bin())
            .args(["uninstall", "--manager", "--manager-namespace", self.0])
            .arg("--kubeconfig")
            .arg(tether_e2e::kubeconfig()));
    }
}

/// `tether uninstall orders` on drop, so no agent keeps dialing a manager that is gone.
struct UninstallOrders;

impl Drop for UninstallOrders {
    fn drop(&mut self) {
        let _ = tether(WS, &["uninstall", "orders"]);
    }
}

/// A platform team installs the manager in a namespace of its choosing; a user names it with
/// `--manager-namespace` (or `TETHER_MANAGER_NAMESPACE`, or the config file's
/// `manager.namespace`), and connect, intercept and doctor work as with the default. A cluster
/// has one manager, so the test moves it and puts it back.
#[test]
fn a_manager_in_another_namespace_is_found_where_the_user_says() {
    const MOVED: &str = "platform-tether";
    let image = manager_image();
    let _restore = RestoreManager(image.clone());
    let kc = tether_e2e::kubeconfig();
    run(Command::new(tether_bin())
        .args(["uninstall", "--manager", "--kubeconfig"])
        .arg(&kc))
    .expect_ok("tether uninstall --manager");
    let _moved = UninstallFrom(MOVED);
    let out = run(Command::new(tether_bin())
        .args(["install", "--image", &image])
        .args(["--manager-namespace", MOVED, "--kubeconfig"])
        .arg(&kc))
    .expect_ok("tether install --manager-namespace");
    assert!(
        out.contains(&format!("installed in namespace {MOVED}")),
        "{out}"
    );
    kubectl(&["-n", MOVED, "get", "deployment", "tether-manager"]).expect_ok("the moved manager");
    assert!(
        !kubectl(&["get", "namespace", "tether"]).ok,
        "the default namespace is gone"
    );

    // Not told where: connect fails, names the namespace it looked in and the flag, and changes
    // nothing on the machine.
    let before = tether_e2e::machine_state(WS);
    let refused = tether(WS, &["connect"]);
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("no traffic manager in namespace tether")
            && refused.stderr.contains("--manager-namespace"),
        "{refused:?}"
    );
    assert_eq!(tether_e2e::machine_state(WS), before);

    // Told by the environment, as a platform team's shell profile would.
    let connected = run(Command::new("ip")
        .args(["netns", "exec", WS])
        .arg(tether_bin())
        .arg("connect")
        .env("TETHER_RUNTIME_DIR", tether_e2e::runtime_dir(WS))
        .env("KUBECONFIG", &kc)
        .env("TETHER_MANAGER_NAMESPACE", MOVED));
    let ws = Connected { ns: WS.to_owned() };
    connected.expect_ok("tether connect with TETHER_MANAGER_NAMESPACE");
    assert_eq!(ws.status()["manager_namespace"], MOVED);
    let url = format!("http://{}/", cluster_ip("hello"));
    curl(Some(WS), &[&url]).expect_ok("hello through the moved manager");

    // An intercept returns once the agent has linked to the manager: the agent dials the moved
    // one.
    let _orders = UninstallOrders;
    tether(WS, &["intercept", "orders", "--port", "18080:http"]).expect_ok("tether intercept");
    tether(WS, &["leave", "orders"]).expect_ok("tether leave");

    // doctor, not told either, checks the manager where the session found it.
    let report = tether(WS, &["doctor", "-o", "json"]);
    let report: Value = serde_json::from_str(&report.stdout).expect("doctor's JSON");
    let installed = report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == "manager.installed"))
        .expect("a manager.installed check");
    assert_eq!(installed["status"], "ok", "{installed:#}");
    assert!(
        installed["found"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("namespace {MOVED}"))),
        "{installed:#}"
    );
}
