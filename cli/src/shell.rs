//! `tether completion` and `tether man`: the command line described for shells and `man`.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use clap::CommandFactory;

use crate::{args::Cli, render};

pub fn completion(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "tether", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    print!("{}", render::man_written(dir));
    Ok(ExitCode::SUCCESS)
}
