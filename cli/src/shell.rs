//! `tether completion` and `tether man`: the command line described for shells and `man`.
//!
//! Completion scripts are clap_complete's, generated from the command line. bash's, zsh's and
//! fish's also complete what only the cluster knows: workload names after `intercept` and
//! `uninstall`, and intercept names after `leave`, from the hidden `tether __complete`
//! (clap_complete's dynamic engine needs a crate the offline registry lacks, so one small
//! wrapper per shell is written here).

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::CommandFactory;
use tether_daemon::{
    cluster::Cluster,
    control::{Request, Response},
};
use tether_kube::workload::kube as wk;

use crate::{
    args::{Cli, Completable},
    client::ask,
    render,
};

/// How long a completion may wait for the cluster: a shell waiting longer feels hung.
const CANDIDATES_TIMEOUT: Duration = Duration::from_secs(2);

/// bash: the generated `_tether`, wrapped so that a workload or intercept name is completed
/// from `tether __complete` where one is expected.
const BASH_DYNAMIC: &str = r#"
_tether_dynamic() {
    local cur="${COMP_WORDS[COMP_CWORD]}" sub="${COMP_WORDS[1]}" ns="" i
    for ((i = 2; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -n|--namespace) ns="${COMP_WORDS[i+1]}" ;;
        esac
    done
    if [[ $COMP_CWORD -eq 2 && "$cur" != -* ]]; then
        local what=""
        case "$sub" in
            intercept|uninstall) what=workloads ;;
            leave) what=intercepts ;;
        esac
        if [[ -n "$what" ]]; then
            local IFS=$'
'
            COMPREPLY=($(compgen -W "$(tether __complete "$what" ${ns:+-n "$ns"} 2>/dev/null)" -- "$cur"))
            return 0
        fi
    fi
    _tether "$@"
}
complete -F _tether_dynamic -o nosort -o bashdefault -o default tether
"#;

/// zsh: the generated `_tether` (registered with `compdef` when the script is sourced), then a
/// wrapper registered after it that offers the cluster's names where one is expected.
const ZSH_DYNAMIC: &str = r#"
_tether_dynamic() {
    local what="" ns="" i
    for ((i = 3; i < CURRENT; i++)); do
        case "${words[i]}" in
            -n|--namespace) ns="${words[i+1]}" ;;
        esac
    done
    if (( CURRENT == 3 )) && [[ "${words[CURRENT]}" != -* ]]; then
        case "${words[2]}" in
            intercept|uninstall) what=workloads ;;
            leave) what=intercepts ;;
        esac
    fi
    if [[ -n "$what" ]]; then
        local -a names
        names=(${(f)"$(tether __complete "$what" ${ns:+-n "$ns"} 2>/dev/null)"})
        compadd -a names
        return
    fi
    _tether "$@"
}
compdef _tether_dynamic tether
"#;

/// fish: the cluster's names as candidates of the first argument after the subcommand.
const FISH_DYNAMIC: &str = r#"
function __tether_first_argument
    set -l words (commandline -opc)
    test (count $words) -eq 2
end
complete -c tether -n '__fish_seen_subcommand_from intercept uninstall; and __tether_first_argument' -f -a '(tether __complete workloads 2>/dev/null)'
complete -c tether -n '__fish_seen_subcommand_from leave; and __tether_first_argument' -f -a '(tether __complete intercepts 2>/dev/null)'
"#;

pub fn completion(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "tether", &mut std::io::stdout());
    match shell {
        clap_complete::Shell::Bash => print!("{BASH_DYNAMIC}"),
        clap_complete::Shell::Zsh => print!("{ZSH_DYNAMIC}"),
        clap_complete::Shell::Fish => print!("{FISH_DYNAMIC}"),
        _ => {}
    }
    ExitCode::SUCCESS
}

/// `tether __complete WHAT`: candidates one per line; nothing (and success) when they cannot be
/// had in time, so a shell never shows an error mid-line.
pub async fn candidates(what: Completable, namespace: Option<String>) -> ExitCode {
    let names = tokio::time::timeout(CANDIDATES_TIMEOUT, list(what, namespace))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    for name in names {
        println!("{name}");
    }
    ExitCode::SUCCESS
}

async fn list(what: Completable, namespace: Option<String>) -> Option<Vec<String>> {
    let status = match ask(Request::Status).await {
        Some(Response::Status(s)) if s.connected => Some(*s),
        _ => None,
    };
    match what {
        Completable::Intercepts => Some(status?.intercepts.into_iter().map(|i| i.name).collect()),
        Completable::Workloads => {
            // Connected to that namespace: the daemon has it at hand.
            if let Some(s) = &status {
                if namespace.as_ref().is_none_or(|ns| *ns == s.namespace) {
                    if let Some(Response::List(list)) = ask(Request::List).await {
                        return Some(list.workloads.into_iter().map(|w| w.name).collect());
                    }
                }
            }
            let cluster = Cluster::load(None, None).await.ok()?;
            let namespace = namespace.unwrap_or_else(|| cluster.default_namespace.clone());
            let workloads = wk::list_workloads(&cluster.client, &namespace).await.ok()?;
            Some(workloads.into_iter().map(|w| w.name).collect())
        }
    }
}

pub fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    print!("{}", render::man_written(dir));
    Ok(ExitCode::SUCCESS)
}
