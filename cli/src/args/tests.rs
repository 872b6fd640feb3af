use clap::Parser;

use super::*;

fn intercept(argv: &[&str]) -> Result<InterceptArgs, clap::Error> {
    let mut full = vec!["tether", "intercept"];
    full.extend_from_slice(argv);
    match Cli::try_parse_from(full)?.command {
        Command::Intercept(args) => Ok(*args),
        other => panic!("not intercept: {other:?}"),
    }
}

#[test]
fn port_specs_parse_as_the_guide_writes_them() {
    assert_eq!(parse_port("8080"), Ok((8080, None)));
    assert_eq!(parse_port("8080:80"), Ok((8080, Some("80".into()))));
    assert_eq!(parse_port("8080:http"), Ok((8080, Some("http".into()))));
    assert_eq!(
        parse_port("8080:orders/http"),
        Ok((8080, Some("orders/http".into())))
    );
    assert_eq!(
        parse_port("8080:"),
        Err("`8080:`: nothing after `:`; write LOCAL or LOCAL:REMOTE".into())
    );
    for bad in ["0", "0:80", "http", "70000:80", ":80", ""] {
        let err = parse_port(bad).unwrap_err();
        assert!(
            err.contains("is not a local port number (1-65535)"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn intercept_takes_a_service_and_its_choices() {
    let args = intercept(&[
        "svc/orders",
        "--port",
        "8080:http",
        "--service",
        "orders",
        "--workload",
        "deploy/orders",
        "--container",
        "app",
        "--to-pod",
        "9901",
        "--to-pod",
        "6379",
    ])
    .unwrap();
    assert_eq!(args.target, "svc/orders");
    assert_eq!(args.port, (8080, Some("http".into())));
    assert_eq!(args.service.as_deref(), Some("orders"));
    assert_eq!(args.workload.as_deref(), Some("deploy/orders"));
    assert_eq!(args.container.as_deref(), Some("app"));
    assert_eq!(args.to_pod, [9901, 6379]);
    for bad in ["0", "http", "65536"] {
        let err = intercept(&["orders", "-p", "8080", "--to-pod", bad]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            err.to_string().contains("is not a port number (1-65535)"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn intercept_takes_the_flags_connect_takes() {
    let args = intercept(&[
        "orders",
        "-p",
        "8080",
        "-n",
        "shop",
        "--kubeconfig",
        "/home/a/kc",
        "--context",
        "kind",
        "--manager-namespace",
        "platform",
        "--transport",
        "port-forward",
        "--never-proxy",
        "10.1.0.0/16",
        "--also-proxy",
        "192.168.5.0/24",
        "--allow-conflicting-subnets",
    ])
    .unwrap();
    assert_eq!(args.namespace.as_deref(), Some("shop"));
    let c = &args.connect;
    assert_eq!(c.kube.kubeconfig, Some(PathBuf::from("/home/a/kc")));
    assert_eq!(c.kube.context.as_deref(), Some("kind"));
    assert_eq!(c.kube.manager_namespace.as_deref(), Some("platform"));
    assert_eq!(c.transport.to_string(), "port-forward");
    assert_eq!(c.never_proxy, ["10.1.0.0/16".parse().unwrap()]);
    assert_eq!(c.also_proxy, ["192.168.5.0/24".parse().unwrap()]);
    assert!(c.allow_conflicting_subnets);
}

#[test]
fn also_port_needs_replace_and_takes_a_local_port() {
    let also = |extra: &[&str]| {
        let mut argv = vec!["worker", "--port", "18096:http"];
        argv.extend_from_slice(extra);
        intercept(&argv).map(|a| a.also_port)
    };
    assert!(also(&["--also-port", "9090"]).is_err(), "without --replace");
    assert_eq!(
        also(&["--replace", "--also-port", "9090", "--also-port", "8081:80"]).unwrap(),
        [
            AlsoPort {
                local: 9090,
                port: 9090
            },
            AlsoPort {
                local: 8081,
                port: 80
            }
        ]
    );
    for bad in ["0", "x", "8081:", ":80", "70000"] {
        assert!(also(&["--replace", "--also-port", bad]).is_err(), "{bad}");
    }
}

#[test]
fn mount_is_on_by_default_and_takes_a_directory_or_a_switch() {
    let mount = |extra: &[&str]| {
        let mut argv = vec!["orders", "--port", "8080"];
        argv.extend_from_slice(extra);
        intercept(&argv).map(|a| a.mount)
    };
    assert_eq!(mount(&[]).unwrap(), MountArg::Temporary);
    assert_eq!(mount(&["--mount"]).unwrap(), MountArg::Temporary);
    assert_eq!(mount(&["--mount=true"]).unwrap(), MountArg::Temporary);
    assert_eq!(mount(&["--mount=false"]).unwrap(), MountArg::Off);
    assert_eq!(
        mount(&["--mount=/tmp/orders"]).unwrap(),
        MountArg::At("/tmp/orders".into())
    );
    // Relative to where the command runs, as the user means it.
    let here = std::env::current_dir().unwrap();
    assert_eq!(
        mount(&["--mount=vols"]).unwrap(),
        MountArg::At(here.join("vols"))
    );
    assert!(mount(&["--mount="]).is_err());
    // `--mount DIR` would take DIR as the target: the value needs `=`.
    assert!(mount(&["--mount", "/tmp/x"]).is_err());
}
