//! What a check found, and the whole report: plain data, rendered as text, JSON or YAML.

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing wrong.
    Ok,
    /// Works, but something is worth a look (a restart, a skew, a near-full node).
    Warn,
    /// Broken: tether (or the cluster under it) cannot work like this.
    Fail,
    /// The check could not run (no RBAC right, a timeout, nothing to check); the reason is in
    /// `found`.
    Skipped,
}

impl Status {
    /// The symbol the text report shows.
    pub fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✔",
            Status::Warn => "⚠",
            Status::Fail => "✘",
            Status::Skipped => "–",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable and dotted: `cluster.api`, `node.<name>.ready`, `manager.pod`,
    /// `agent.deployment.<name>`, `workstation.resolver`. Scripts may rely on it.
    pub id: String,
    pub status: Status,
    /// What was found, in a sentence.
    pub found: String,
    /// What to do about it: a command or a concrete action (for every warning and failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl Check {
    pub fn ok(id: impl Into<String>, found: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Ok,
            found: found.into(),
            next: None,
        }
    }

    pub fn warn(id: impl Into<String>, found: impl Into<String>, next: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Warn,
            found: found.into(),
            next: Some(next.into()),
        }
    }

    pub fn fail(id: impl Into<String>, found: impl Into<String>, next: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Fail,
            found: found.into(),
            next: Some(next.into()),
        }
    }

    /// A check that could not run, and why.
    pub fn skipped(id: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Skipped,
            found: why.into(),
            next: None,
        }
    }

    /// The same check with a next step (e.g. how to get the right a skipped check lacked).
    pub fn with_next(mut self, next: impl Into<String>) -> Check {
        self.next = Some(next.into());
        self
    }
}

/// How many checks came out each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skipped: usize,
}

/// Everything `tether doctor` found, in the order it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    /// Orders the checks by section (cluster, nodes, manager, access, agents, workstation),
    /// keeping each section's own order, and counts them.
    pub fn new(mut checks: Vec<Check>) -> Report {
        checks.sort_by_key(|c| Section::of(&c.id));
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Ok => summary.ok += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Skipped => summary.skipped += 1,
            }
        }
        Report { checks, summary }
    }

    /// Whether any check failed (the exit code is 1 then).
    pub fn failed(&self) -> bool {
        self.summary.fail > 0
    }

    /// The check with this id.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// One line per check under a heading per section, the next step indented below.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut section = None;
        for check in &self.checks {
            let this = Section::of(&check.id);
            if section != Some(this) {
                if section.is_some() {
                    out.push('\n');
                }
                out.push_str(this.title());
                out.push('\n');
                section = Some(this);
            }
            out.push_str(&format!(
                "  {} {:<30} {}\n",
                check.status.symbol(),
                check.id,
                check.found
            ));
            if let Some(next) = &check.next {
                out.push_str(&format!("      → {next}\n"));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\n{} ok, {} warnings, {} failed, {} skipped\n",
            s.ok, s.warn, s.fail, s.skipped
        ));
        out
    }
}

/// The report's sections, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Cluster,
    Nodes,
    Manager,
    Access,
    Agents,
    Workstation,
    Other,
}

impl Section {
    fn of(id: &str) -> Section {
        match id.split('.').next().unwrap_or_default() {
            "cluster" => Section::Cluster,
            "node" | "nodes" => Section::Nodes,
            "manager" => Section::Manager,
            "rbac" => Section::Access,
            "agent" | "agents" => Section::Agents,
            "workstation" => Section::Workstation,
            _ => Section::Other,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Section::Cluster => "Cluster",
            Section::Nodes => "Nodes",
            Section::Manager => "Traffic manager",
            Section::Access => "Your access (RBAC)",
            Section::Agents => "Agents",
            Section::Workstation => "Workstation",
            Section::Other => "Other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_groups_by_section_with_next_steps_indented() {
        let report = Report::new(vec![
            Check::ok("workstation.daemon", "not connected"),
            Check::fail(
                "manager.pod",
                "no pod: scaled to 0",
                "kubectl -n tether scale deployment/tether-manager --replicas=1",
            ),
            Check::ok("cluster.api", "reachable"),
            Check::skipped("nodes", "your user may not list nodes"),
        ]);
        let text = report.to_text();
        let want = "Cluster\n  ✔ cluster.api                    reachable\n\n\
                    Nodes\n  – nodes                          your user may not list nodes\n\n\
                    Traffic manager\n  ✘ manager.pod                    no pod: scaled to 0\n      \
                    → kubectl -n tether scale deployment/tether-manager --replicas=1\n\n\
                    Workstation\n  ✔ workstation.daemon             not connected\n\n\
                    2 ok, 0 warnings, 1 failed, 1 skipped\n";
        assert_eq!(text, want);
        assert!(report.failed());
    }

    #[test]
    fn skipped_and_warnings_do_not_fail() {
        let report = Report::new(vec![
            Check::warn("cluster.clock", "3 s ahead", "sync the clock"),
            Check::skipped("cluster.metrics", "timed out"),
        ]);
        assert!(!report.failed());
    }

    #[test]
    fn json_names_statuses_in_lowercase_and_omits_empty_next() {
        let json = serde_json::to_value(Report::new(vec![Check::ok("cluster.api", "up")])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "checks": [{"id": "cluster.api", "status": "ok", "found": "up"}],
                "summary": {"ok": 1, "warn": 0, "fail": 0, "skipped": 0}
            })
        );
    }
}
