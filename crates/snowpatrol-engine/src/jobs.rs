//! Jobs as the engine runs them: task graphs registered in code, resolved against the operator's TOML.

use crate::condition::Condition;
use crate::config::{JobConfig, ParamConfig, SchedulerSettings};
use crate::params::{ParamSchema, ParamSpec, ParamType, coerce_value};
use crate::schedule::CronSchedule;
use crate::task::Task;
use snowpatrol_store::{JobRegistration, JobShape, Shapes, TaskShape, TriggerRule};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A task of a job, as written in code.
#[derive(Clone)]
pub struct TaskDefinition {
    pub name: String,
    pub depends_on: Vec<String>,
    pub map_over: Option<String>,
    pub trigger_rule: TriggerRule,
    pub outlets: Vec<String>,
    pub task: Arc<dyn Task>,
    pub retries: Option<u32>,
    pub timeout: Option<Duration>,
}

impl TaskDefinition {
    pub fn new(name: &str, task: Arc<dyn Task>) -> Self {
        Self {
            name: name.into(),
            depends_on: vec![],
            map_over: None,
            trigger_rule: TriggerRule::AllSuccess,
            outlets: vec![],
            task,
            retries: None,
            timeout: None,
        }
    }
    pub fn depends_on(mut self, tasks: &[&str]) -> Self {
        self.depends_on.extend(tasks.iter().map(|s| s.to_string()));
        self
    }
    /// One instance per key returned by `upstream` (which becomes a dependency).
    pub fn map_over(mut self, upstream: &str) -> Self {
        if !self.depends_on.iter().any(|d| d == upstream) {
            self.depends_on.push(upstream.into());
        }
        self.map_over = Some(upstream.into());
        self
    }
    pub fn trigger_rule(mut self, rule: TriggerRule) -> Self {
        self.trigger_rule = rule;
        self
    }
    pub fn outlet(mut self, uri: &str) -> Self {
        self.outlets.push(uri.into());
        self
    }
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// A job as written in code: its tasks and declared parameters.
#[derive(Clone)]
pub struct JobDefinition {
    pub name: String,
    pub description: String,
    pub tasks: Vec<TaskDefinition>,
    pub params: Vec<ParamSpec>,
    /// Schedule and limits used when the TOML has no `[jobs.<name>]` table, so a product's job chain works
    /// out of the box; any table in the TOML replaces it whole.
    pub default_config: Option<JobConfig>,
}

impl JobDefinition {
    pub fn new(name: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            tasks: vec![],
            params: vec![],
            default_config: None,
        }
    }
    pub fn task(mut self, t: TaskDefinition) -> Self {
        self.tasks.push(t);
        self
    }
    pub fn param(mut self, p: ParamSpec) -> Self {
        self.params.push(p);
        self
    }
    pub fn default_config(mut self, cfg: JobConfig) -> Self {
        self.default_config = Some(cfg);
        self
    }
}

/// Jobs known to the binary.
#[derive(Clone, Default)]
pub struct JobRegistry {
    pub jobs: BTreeMap<String, JobDefinition>,
    /// Datasets produced outside Snowpatrol (by `snowpatrol emit`), which schedules may name.
    pub external_datasets: BTreeSet<String>,
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn register(&mut self, job: JobDefinition) -> &mut Self {
        self.jobs.insert(job.name.clone(), job);
        self
    }
    pub fn external_dataset(&mut self, uri: &str) -> &mut Self {
        self.external_datasets.insert(uri.into());
        self
    }
}

/// Retry and timeout policy of one task after merging code, TOML and scheduler defaults.
#[derive(Clone, Debug)]
pub struct TaskPolicy {
    pub max_tries: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub timeout: Option<Duration>,
}

#[derive(Clone)]
pub struct ResolvedJob {
    pub definition: JobDefinition,
    pub cron: Option<CronSchedule>,
    pub condition: Option<Condition>,
    pub catchup: bool,
    /// See [`crate::JobConfig::run_on_start`].
    pub run_on_start: bool,
    pub max_active_runs: u32,
    pub params: ParamSchema,
    pub policies: HashMap<String, TaskPolicy>,
    pub shape: Arc<JobShape>,
}

impl ResolvedJob {
    pub fn name(&self) -> &str {
        &self.definition.name
    }
    pub fn schedule_text(&self) -> String {
        let mut parts = vec![];
        if let Some(c) = &self.cron {
            parts.push(c.describe());
        }
        if let Some(c) = &self.condition {
            parts.push(format!("datasets {c}"));
        }
        if parts.is_empty() {
            "manual".into()
        } else {
            parts.join(" or ")
        }
    }
    pub fn task(&self, name: &str) -> Option<&TaskDefinition> {
        self.definition.tasks.iter().find(|t| t.name == name)
    }
}

/// Every job, resolved and validated.
#[derive(Clone, Default)]
pub struct Jobs {
    pub jobs: BTreeMap<String, ResolvedJob>,
    pub shapes: Shapes,
    pub known_datasets: BTreeSet<String>,
}

impl Jobs {
    pub fn get(&self, name: &str) -> Option<&ResolvedJob> {
        self.jobs.get(name)
    }
    pub fn registrations(&self) -> Vec<JobRegistration> {
        self.jobs
            .values()
            .map(|j| JobRegistration {
                job_name: j.name().to_string(),
                schedule: j.schedule_text(),
                datasets: j
                    .condition
                    .as_ref()
                    .map(|c| c.datasets())
                    .unwrap_or_default(),
            })
            .collect()
    }
    pub fn unknown_job(&self, name: &str) -> String {
        format!(
            "unknown job `{name}`; known jobs: {}",
            self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

/// A configuration problem, located by its TOML key path (e.g. `jobs.prep.cron`).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|i| i.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

/// A cron without a tick within this many years is refused as one that never fires.
const NEVER_FIRES_YEARS: i64 = 5;

/// Validates the registry against the TOML job configs: unknown jobs and tasks, cycles, bad cron and time
/// zones, crons that never fire, unknown datasets, dataset cycles between jobs, parameter types and domains, and
/// dangerous `[scheduler]` settings ([`SchedulerSettings::problems`]). Reports every problem at once.
pub fn resolve_jobs(
    registry: &JobRegistry,
    configs: &BTreeMap<String, JobConfig>,
    settings: &SchedulerSettings,
) -> Result<Jobs, ConfigErrors> {
    // The scheduler's own settings first: they decide whether work is lost or done twice, whatever the jobs.
    let mut issues = settings.problems();
    for name in configs.keys().filter(|n| !registry.jobs.contains_key(*n)) {
        let provided = registry.jobs.keys().cloned().collect::<Vec<_>>().join(", ");
        push(
            &mut issues,
            format!("jobs.{name}"),
            format!("unknown job `{name}`; jobs this binary provides: {provided}"),
        );
    }
    let produced = producers(registry);
    let mut known_datasets: BTreeSet<String> = produced.keys().cloned().collect();
    known_datasets.extend(registry.external_datasets.iter().cloned());
    let default_cfg = JobConfig {
        timezone: "UTC".into(),
        max_active_runs: 1,
        ..Default::default()
    };
    let mut resolved = BTreeMap::new();
    for job in registry.jobs.values() {
        let cfg = configs
            .get(&job.name)
            .or(job.default_config.as_ref())
            .unwrap_or(&default_cfg);
        if let Some(r) = resolve_job(job, cfg, &known_datasets, settings, &mut issues) {
            resolved.insert(job.name.clone(), r);
        }
    }
    if let Some(cycle) = dataset_cycle(&resolved, &produced) {
        push(
            &mut issues,
            "jobs",
            format!(
                "dataset schedules form a cycle: {} (each job would trigger the next forever)",
                cycle.join(" -> ")
            ),
        );
    }
    if !issues.is_empty() {
        return Err(ConfigErrors(issues));
    }
    let shapes = resolved
        .iter()
        .map(|(k, v)| (k.clone(), v.shape.clone()))
        .collect();
    Ok(Jobs {
        jobs: resolved,
        shapes,
        known_datasets,
    })
}

fn push(issues: &mut Vec<ConfigIssue>, path: impl Into<String>, message: impl Into<String>) {
    issues.push(ConfigIssue {
        path: path.into(),
        message: message.into(),
    });
}

/// Dataset URI -> the jobs whose tasks produce it.
fn producers(registry: &JobRegistry) -> BTreeMap<String, Vec<String>> {
    let mut produced: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in registry.jobs.values() {
        for o in job.tasks.iter().flat_map(|t| &t.outlets) {
            produced
                .entry(o.clone())
                .or_default()
                .push(job.name.clone());
        }
    }
    produced
}

/// One job with its `[jobs.NAME]` table; None when a problem (recorded in `issues`) leaves nothing to run.
fn resolve_job(
    job: &JobDefinition,
    cfg: &JobConfig,
    known_datasets: &BTreeSet<String>,
    settings: &SchedulerSettings,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ResolvedJob> {
    let base = format!("jobs.{}", job.name);
    let order = match topo_order(job) {
        Ok(o) => o,
        Err(msg) => {
            push(issues, base, msg);
            return None;
        }
    };
    for tname in cfg
        .tasks
        .keys()
        .filter(|n| !job.tasks.iter().any(|t| &t.name == *n))
    {
        let tasks = job
            .tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        push(
            issues,
            format!("{base}.tasks.{tname}"),
            format!(
                "job `{}` has no task `{tname}`; its tasks: {tasks}",
                job.name
            ),
        );
    }
    let cron = resolve_cron(cfg, &base, issues);
    let condition = resolve_condition(cfg, &base, known_datasets, issues);
    if cfg.max_active_runs == 0 {
        push(
            issues,
            format!("{base}.max_active_runs"),
            "must be at least 1",
        );
    }
    let params = resolve_params(job, cfg, &base, issues);
    let policies = task_policies(job, cfg, settings);
    let shape = Arc::new(job_shape(job, &order, &policies));
    Some(ResolvedJob {
        definition: job.clone(),
        cron,
        condition,
        catchup: cfg.catchup,
        run_on_start: cfg.run_on_start,
        max_active_runs: cfg.max_active_runs.max(1),
        params,
        policies,
        shape,
    })
}

/// What the store needs of a job to advance its runs: the tasks in dependency order with their tries.
fn job_shape(
    job: &JobDefinition,
    order: &[&TaskDefinition],
    policies: &HashMap<String, TaskPolicy>,
) -> JobShape {
    JobShape {
        job_name: job.name.clone(),
        tasks: order
            .iter()
            .map(|t| TaskShape {
                name: t.name.clone(),
                depends_on: t.depends_on.clone(),
                map_over: t.map_over.clone(),
                trigger_rule: t.trigger_rule,
                outlets: t.outlets.clone(),
                max_tries: policies.get(&t.name).map_or(1, |p| p.max_tries as i32),
            })
            .collect(),
    }
}

/// The job's cron in its time zone; refuses one that does not parse and one that never fires.
fn resolve_cron(
    cfg: &JobConfig,
    base: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<CronSchedule> {
    let expr = cfg.cron.as_ref()?;
    match CronSchedule::new(expr, &cfg.timezone) {
        Ok(c) => {
            // `0 6 30 2 *` parses, but February 30th never comes: the job would silently never run.
            let now = chrono::Utc::now();
            let horizon = now + chrono::Duration::days(NEVER_FIRES_YEARS * 366);
            if c.next_after(now).is_none_or(|t| t > horizon) {
                push(
                    issues,
                    format!("{base}.cron"),
                    format!(
                        "cron `{expr}` never fires: it has no tick in the next {NEVER_FIRES_YEARS} years (a day \
                         that does not exist in the month, such as February 30th?)"
                    ),
                );
            }
            Some(c)
        }
        Err(e) => {
            let key = if matches!(e, crate::schedule::ScheduleError::TimeZone(_)) {
                "timezone"
            } else {
                "cron"
            };
            push(issues, format!("{base}.{key}"), e.to_string());
            None
        }
    }
}

/// The job's dataset condition; refuses datasets no job produces and nobody declared external.
fn resolve_condition(
    cfg: &JobConfig,
    base: &str,
    known_datasets: &BTreeSet<String>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Condition> {
    let spec = cfg.datasets.as_ref()?;
    match Condition::from_spec(spec) {
        Ok(c) => {
            for uri in c
                .datasets()
                .into_iter()
                .filter(|u| !known_datasets.contains(u))
            {
                let known = known_datasets
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                push(
                    issues,
                    format!("{base}.datasets"),
                    format!(
                        "unknown dataset `{uri}`: no job produces it and it is not declared external \
                         (`[datasets] external`); known datasets: {known}"
                    ),
                );
            }
            Some(c)
        }
        Err(e) => {
            push(issues, format!("{base}.datasets"), e.to_string());
            None
        }
    }
}

/// The job's parameters: the code's declarations, with the defaults and narrower domains of `[jobs.NAME.params]`
/// and the parameters only the TOML declares.
fn resolve_params(
    job: &JobDefinition,
    cfg: &JobConfig,
    base: &str,
    issues: &mut Vec<ConfigIssue>,
) -> ParamSchema {
    let mut params = ParamSchema {
        job: job.name.clone(),
        specs: job
            .params
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect(),
    };
    for (pname, pcfg) in &cfg.params {
        let path = format!("{base}.params.{pname}");
        let declared = params.specs.get(pname);
        match resolve_param(pname, pcfg, declared) {
            Ok(spec) => {
                params.specs.insert(pname.clone(), spec);
            }
            Err(problem) => push(issues, path, problem),
        }
    }
    // Every default, the code's included, must lie in its own domain: a cron or dataset run uses them as they
    // are, with nobody to refuse them.
    for spec in params.specs.values() {
        for problem in spec.declaration_problems(&job.name) {
            push(issues, format!("{base}.params.{}", spec.name), problem);
        }
    }
    params
}

/// One `[jobs.NAME.params]` entry over the code's declaration of it, if any.
fn resolve_param(
    pname: &str,
    pcfg: &ParamConfig,
    declared: Option<&ParamSpec>,
) -> Result<ParamSpec, String> {
    let (ty, value, description, (one_of, min, max)) = match pcfg {
        // A table that is no declaration (a misspelt `minimum`, a missing `type`) must not pass as a value.
        ParamConfig::Value(serde_json::Value::Object(_)) => {
            return Err("a declaration is `{ type = \"int\", default = 3 }` with optional description, one_of, \
                        min and max, and nothing else"
                .into());
        }
        ParamConfig::Declared {
            ty,
            default,
            description,
            one_of,
            min,
            max,
        } => (
            Some(*ty),
            default,
            description.as_str(),
            (one_of.clone(), *min, *max),
        ),
        ParamConfig::Value(v) => (None, v, "", (None, None, None)),
    };
    let ty = match (declared.map(|s| s.ty), ty) {
        (Some(d), Some(t)) if d != t => return Err(format!("declared as {d} by the job, not {t}")),
        (Some(d), _) => d,
        (None, Some(t)) => t,
        (None, None) => match value {
            serde_json::Value::Bool(_) => ParamType::Bool,
            serde_json::Value::Number(n) if n.is_i64() => ParamType::Int,
            serde_json::Value::Number(_) => ParamType::Float,
            serde_json::Value::String(_) => ParamType::String,
            _ => return Err("a parameter must be a bool, integer, float or string".into()),
        },
    };
    let v = coerce_value(ty, value).ok_or_else(|| format!("must be {ty}, got {value}"))?;
    // The code's declaration keeps its description and domain; the TOML can only narrow it.
    let mut spec = declared
        .cloned()
        .unwrap_or_else(|| ParamSpec::new(pname, ty, v.clone(), description));
    spec.default = v;
    spec.narrow(one_of, min, max);
    Ok(spec)
}

/// Retry and timeout policy of each task: `[jobs.NAME.tasks.TASK]`, else the code's, else `[scheduler]`'s.
fn task_policies(
    job: &JobDefinition,
    cfg: &JobConfig,
    settings: &SchedulerSettings,
) -> HashMap<String, TaskPolicy> {
    job.tasks
        .iter()
        .map(|t| {
            let p = cfg.tasks.get(&t.name).cloned().unwrap_or_default();
            let retries = p.retries.or(t.retries).unwrap_or(settings.default_retries);
            let policy = TaskPolicy {
                max_tries: retries + 1,
                retry_delay: p.retry_delay.unwrap_or(settings.default_retry_delay),
                max_retry_delay: p
                    .max_retry_delay
                    .unwrap_or(settings.default_max_retry_delay),
                timeout: p.timeout.or(t.timeout),
            };
            (t.name.clone(), policy)
        })
        .collect()
}

/// A cycle of jobs each triggered by a dataset the previous one produces: each would trigger the next forever.
fn dataset_cycle(
    resolved: &BTreeMap<String, ResolvedJob>,
    produced: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for job in resolved.values() {
        let datasets = job
            .condition
            .as_ref()
            .map(|c| c.datasets())
            .unwrap_or_default();
        for d in &datasets {
            for producer in produced.get(d).into_iter().flatten() {
                edges
                    .entry(producer.clone())
                    .or_default()
                    .insert(job.name().to_string());
            }
        }
    }
    find_cycle(&edges)
}

/// Tasks in dependency order; refuses unknown dependencies, duplicate names and cycles.
fn topo_order(job: &JobDefinition) -> Result<Vec<&TaskDefinition>, String> {
    let mut names = BTreeSet::new();
    for t in &job.tasks {
        if !names.insert(t.name.as_str()) {
            return Err(format!(
                "job `{}` defines task `{}` twice",
                job.name, t.name
            ));
        }
    }
    for t in &job.tasks {
        for d in &t.depends_on {
            if !names.contains(d.as_str()) {
                return Err(format!(
                    "task `{}` of job `{}` depends on unknown task `{d}`",
                    t.name, job.name
                ));
            }
        }
    }
    let edges: BTreeMap<String, BTreeSet<String>> = job
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.depends_on.iter().cloned().collect()))
        .collect();
    if let Some(cycle) = find_cycle(&edges) {
        return Err(format!(
            "tasks of job `{}` form a cycle: {}",
            job.name,
            cycle.join(" -> ")
        ));
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < job.tasks.len() {
        for t in &job.tasks {
            if !done.contains(t.name.as_str())
                && t.depends_on.iter().all(|d| done.contains(d.as_str()))
            {
                done.insert(&t.name);
                order.push(t);
            }
        }
    }
    Ok(order)
}

/// A cycle in a directed graph (node -> successors), as a path that ends where it starts.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut HashMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = HashMap::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}
