//! `tether install`: the traffic manager's manifests, applied to the cluster or printed.

use std::process::ExitCode;

use tether_kube::install;

use crate::{
    args::{KubeArgs, ManifestFormat},
    progress::Progress,
    render,
};

/// What `tether install` was told.
#[derive(Debug)]
pub struct Install {
    pub kube: KubeArgs,
    pub image: String,
    pub image_pull_secret: Option<String>,
    /// `Some(format)`: print the manifests instead of applying them.
    pub dry_run: Option<ManifestFormat>,
}

pub async fn install(args: Install) -> anyhow::Result<ExitCode> {
    let Install {
        kube,
        image,
        image_pull_secret,
        dry_run,
    } = args;
    let namespace = kube.manager_namespace();
    let mut manifests = install::manifests(&image, namespace)?;
    if let Some(secret) = &image_pull_secret {
        install::with_image_pull_secret(&mut manifests, secret);
    }
    if let Some(format) = dry_run {
        print!("{}", render::manifests(&manifests, format)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cluster = kube.cluster().await?;
    print!("{}", render::installing(&image, &cluster.server));
    let progress = Progress::stderr();
    install::install_manifests(
        &cluster.client,
        &manifests,
        &image,
        install::INSTALL_TIMEOUT,
        &|stage| progress.step(stage),
    )
    .await?;
    progress.finish();
    print!("{}", render::installed(namespace));
    Ok(ExitCode::SUCCESS)
}
