//! `cargo xtask`: everything around the code — the local Kubernetes cluster, images, the demo, the
//! test suite and the benchmarks.
//!
//! # Layout
//! - `cluster`: wraps `scripts/cluster.sh` (bring-up, teardown, recovery) and `scripts/images.sh`.
//! - `sample`: deploys the sample app from `deploy/sample`.
//! - `demo` / `test`: the two commands the README gives a newcomer.
//! - `busy`: the CPU burner of `--busy`.
//! - `bench`: `tether connect` measured against the direct path and `kubectl port-forward`.
#![forbid(unsafe_code)]

mod bench;
mod busy;
mod cluster;
mod demo;
mod manager;
mod sample;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "tether's project automation")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage the local single-node Kubernetes cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Rebuild the project's images and push them to the cluster's registry.
    Images,
    /// The tether-agent image for your own cluster.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Bring the cluster up, deploy the sample app and show tether at work.
    Demo {
        /// Run a CPU burner on every core meanwhile, as on a fresh machine busy with builds.
        #[arg(long)]
        busy: bool,
    },
    /// Run every test: unit, integration and end-to-end on the local cluster.
    Test {
        /// Leave the cluster running at the end (skips the teardown checks).
        #[arg(long)]
        keep_cluster: bool,
        /// Run a CPU burner on every core meanwhile, as on a fresh machine busy with builds.
        #[arg(long)]
        busy: bool,
    },
    /// Measure tether against the direct path and `kubectl port-forward` (cluster must be up).
    Bench(bench::Args),
    /// Write tether's man pages into target/man (read one with `man -l target/man/tether.1`).
    Man,
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Build the tether-agent image and push it to REGISTRY/REPO[:TAG] (tag: the version), with
    /// the credentials of docker's config.json or containers' auth.json.
    Push {
        /// Where to, e.g. registry.example.com/platform/tether-agent:0.1.0.
        dest: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Start the cluster (builds Kubernetes the first time; idempotent; recovers a killed run).
    Up,
    /// Stop the cluster and remove everything it made.
    Down,
    /// Show the components and the node.
    Status,
    /// Print what `tether` needs by hand: KUBECONFIG and TETHER_AGENT_IMAGE (`eval` it).
    Env,
    /// Fail if anything the cluster made is still there.
    CheckClean,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Cluster { cmd } => {
            let verb = match cmd {
                ClusterCmd::Up => "up",
                ClusterCmd::Down => "down",
                ClusterCmd::Status => "status",
                ClusterCmd::Env => "env",
                ClusterCmd::CheckClean => "check-clean",
            };
            cluster::script("cluster.sh", &[verb])
        }
        Cmd::Images => cluster::script("images.sh", &["all"]),
        Cmd::Image {
            cmd: ImageCmd::Push { dest },
        } => cluster::script("images.sh", &["push", &dest]),
        Cmd::Demo { busy } => {
            let _burner = busy.then(busy::Burner::start);
            demo::run()
        }
        Cmd::Test { keep_cluster, busy } => {
            let _burner = busy.then(busy::Burner::start);
            test::run(keep_cluster)
        }
        Cmd::Bench(args) => bench::run(args),
        Cmd::Man => {
            let status = cluster::cargo()
                .args(["run", "--quiet", "-p", "tether-cli", "--", "man"])
                .arg(cluster::repo().join("target/man"))
                .status()?;
            anyhow::ensure!(status.success(), "writing the man pages failed");
            Ok(())
        }
    }
}
