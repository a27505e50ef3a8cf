//! Deciding what a run does next from the states of its task groups. Pure, so it is tested without a database.

use crate::types::{JobShape, RunState, TaskShape, TriggerRule};
use std::collections::HashMap;

/// Instance counts of one task (all map keys of it) within one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    pub total: i64,
    pub success: i64,
    pub failed: i64,
    pub skipped: i64,
    pub cancelled: i64,
}

impl GroupStats {
    pub fn is_terminal(&self) -> bool {
        self.success + self.failed + self.skipped + self.cancelled == self.total
    }
    /// Skipped instances count as done-without-failure (e.g. a fan-out over zero keys).
    pub fn all_succeeded(&self) -> bool {
        self.is_terminal()
            && self.failed == 0
            && self.cancelled == 0
            && self.success + self.skipped == self.total
    }
    pub fn has_success_only(&self) -> bool {
        self.total > 0 && self.success == self.total
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanStep {
    /// Create the task's instance(s); `map_over` names the upstream whose keys to fan out over.
    Create {
        task: String,
        map_over: Option<String>,
    },
    /// Record the task as skipped because an upstream did not succeed (trigger rule `all_success`).
    Skip { task: String, reason: String },
    /// Every task is terminal: the run ends in this state.
    Finish(RunState),
}

/// One pass in topological order. A task is created once all its upstream groups are terminal and its trigger
/// rule holds; otherwise skipped. Created groups count as pending, skipped ones as terminal, so skips cascade in
/// the same pass and creations wait for the next.
pub fn plan_run(shape: &JobShape, groups: &HashMap<String, GroupStats>) -> Vec<PlanStep> {
    let mut view: View = shape
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), groups.get(&t.name).copied()))
        .collect();
    let mut steps = Vec::new();
    for task in &shape.tasks {
        if let Some(step) = next_step(task, &view) {
            // Pending: one placeholder instance that is not terminal; skipped: one terminal instance.
            let placeholder = GroupStats {
                total: 1,
                skipped: i64::from(matches!(step, PlanStep::Skip { .. })),
                ..Default::default()
            };
            view.insert(&task.name, Some(placeholder));
            steps.push(step);
        }
    }
    let all_terminal = shape
        .tasks
        .iter()
        .all(|t| stats(&view, &t.name).is_some_and(|g| g.is_terminal()));
    if all_terminal && !steps.iter().any(|s| matches!(s, PlanStep::Create { .. })) {
        let failed = shape
            .tasks
            .iter()
            .filter_map(|t| stats(&view, &t.name))
            .any(|g| g.failed > 0 || g.cancelled > 0);
        steps.push(PlanStep::Finish(if failed {
            RunState::Failed
        } else {
            RunState::Success
        }));
    }
    steps
}

/// Every task downstream of `roots` (through `depends_on` and `map_over`, transitively), `roots` excluded
/// unless one of them is downstream of another. What `clear` and `mark` re-plan.
pub fn downstream_of(
    shape: &JobShape,
    roots: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut found = std::collections::BTreeSet::new();
    // Tasks are in topological order, so one pass sees every upstream before its downstream.
    for task in &shape.tasks {
        let upstream = task.depends_on.iter().chain(task.map_over.iter());
        if upstream
            .into_iter()
            .any(|u| roots.contains(u) || found.contains(u))
        {
            found.insert(task.name.clone());
        }
    }
    found
}

/// Each task's instance counts as the pass sees them (None: not created yet).
type View<'a> = HashMap<&'a str, Option<GroupStats>>;

fn stats(view: &View<'_>, task: &str) -> Option<GroupStats> {
    view.get(task).copied().flatten()
}

/// What to do with a task not created yet: create it, skip it, or nothing while an upstream is unfinished.
fn next_step(task: &TaskShape, view: &View<'_>) -> Option<PlanStep> {
    if stats(view, &task.name).is_some() {
        return None;
    }
    let upstream: Vec<Option<GroupStats>> =
        task.depends_on.iter().map(|d| stats(view, d)).collect();
    if upstream.iter().any(|u| u.is_none_or(|g| !g.is_terminal())) {
        return None;
    }
    let all_ok = upstream.iter().flatten().all(|g| g.all_succeeded());
    let runnable = match task.trigger_rule {
        TriggerRule::AllSuccess => all_ok,
        TriggerRule::AllDone => true,
    };
    if runnable {
        return Some(PlanStep::Create {
            task: task.name.clone(),
            map_over: task.map_over.clone(),
        });
    }
    let failed: Vec<&str> = task
        .depends_on
        .iter()
        .filter(|d| stats(view, d).is_some_and(|g| !g.all_succeeded()))
        .map(|s| s.as_str())
        .collect();
    Some(PlanStep::Skip {
        task: task.name.clone(),
        reason: format!("upstream task(s) did not succeed: {}", failed.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::types::TaskShape;

    fn shape() -> JobShape {
        let t = |name: &str, deps: &[&str], rule| TaskShape {
            name: name.into(),
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            map_over: None,
            trigger_rule: rule,
            outlets: vec![],
            max_tries: 1,
        };
        JobShape {
            job_name: "j".into(),
            tasks: vec![
                t("a", &[], TriggerRule::AllSuccess),
                t("b", &["a"], TriggerRule::AllSuccess),
                t("c", &["b"], TriggerRule::AllSuccess),
                t("report", &["b"], TriggerRule::AllDone),
            ],
        }
    }

    #[test]
    fn downstream_of_follows_dependencies_transitively() {
        let s = shape();
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(downstream_of(&s, &set(&["a"])), set(&["b", "c", "report"]));
        assert_eq!(downstream_of(&s, &set(&["b"])), set(&["c", "report"]));
        assert_eq!(downstream_of(&s, &set(&["c"])), set(&[]));
        assert_eq!(
            downstream_of(&s, &set(&["a", "c"])),
            set(&["b", "c", "report"])
        );
        assert!(downstream_of(&s, &set(&[])).is_empty());
    }

    fn done(success: i64, failed: i64) -> GroupStats {
        GroupStats {
            total: success + failed,
            success,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn fresh_run_creates_roots_only() {
        assert_eq!(
            plan_run(&shape(), &HashMap::new()),
            vec![PlanStep::Create {
                task: "a".into(),
                map_over: None
            }]
        );
    }

    #[test]
    fn failure_skips_all_success_but_runs_all_done_then_fails_run() {
        let mut g = HashMap::new();
        g.insert("a".to_string(), done(1, 0));
        g.insert("b".to_string(), done(3, 1));
        let steps = plan_run(&shape(), &g);
        assert!(matches!(&steps[0], PlanStep::Skip { task, .. } if task == "c"));
        assert_eq!(
            steps[1],
            PlanStep::Create {
                task: "report".into(),
                map_over: None
            }
        );
        assert_eq!(steps.len(), 2);
        g.insert(
            "c".to_string(),
            GroupStats {
                total: 1,
                skipped: 1,
                ..Default::default()
            },
        );
        g.insert("report".to_string(), done(1, 0));
        assert_eq!(
            plan_run(&shape(), &g),
            vec![PlanStep::Finish(RunState::Failed)]
        );
    }

    #[test]
    fn pending_group_blocks_downstream() {
        let mut g = HashMap::new();
        g.insert(
            "a".to_string(),
            GroupStats {
                total: 2,
                success: 1,
                ..Default::default()
            },
        );
        assert!(plan_run(&shape(), &g).is_empty());
    }

    #[test]
    fn all_success_finishes_successfully() {
        let g: HashMap<_, _> = ["a", "b", "c", "report"]
            .iter()
            .map(|t| (t.to_string(), done(2, 0)))
            .collect();
        assert_eq!(
            plan_run(&shape(), &g),
            vec![PlanStep::Finish(RunState::Success)]
        );
    }
}
