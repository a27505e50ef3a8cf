//! Task logs: the tracing events of each task try, captured with the fields of their spans and stored in
//! `task_logs`, so `snowpatrol logs`, the API and the console can show what a try did (Airflow's task logs).
//!
//! Capture is a `tracing_subscriber` [`Layer`] the binary installs next to its formatter: every event inside a
//! try's `task` span (the worker opens one per try, with `run_id`, `task_instance_id`, `try_number`, `task`,
//! `key`) is copied into a process-wide [`TaskLogSink`], together with the fields of the spans below the task's
//! (a predict's per-warehouse span adds `warehouse`). The worker loop drains the sink into the database at each
//! heartbeat (so `--follow` sees a running try) and when it records finished tries.
//!
//! Why a process-wide sink rather than one per engine: a tracing subscriber is process-wide already, and a
//! line is the same fact whichever engine of the process writes it. Why not a database writer inside the layer:
//! `on_event` runs on the task's own thread, often a rayon worker, where blocking on the database would stall
//! the computation it describes.
//!
//! Bounds: at most `max_lines_per_try` lines of a try are kept (a notice counts the rest), and lines older than
//! their run go with it under history retention. Capture is best effort: lines that cannot be written while the
//! database is unavailable are dropped with a warning, never retried without bound.

use chrono::Utc;
use snowpatrol_store::{LogLevel, RunId, TaskInstanceId, TaskLogLine};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The name of the span the worker opens around each try.
pub const TASK_SPAN: &str = "task";

/// Lines a try keeps when the configuration says nothing.
pub const DEFAULT_MAX_LINES_PER_TRY: usize = 1000;

/// Which try a span belongs to (stored in the extensions of the task span and of every span below it).
#[derive(Clone, Debug, Default)]
struct TryKey {
    run_id: RunId,
    task_instance_id: TaskInstanceId,
    try_number: i32,
    task_name: String,
    map_key: String,
}

/// Fields of a span below a task span, carried into the lines of the events inside it.
#[derive(Default)]
struct SpanFields(serde_json::Map<String, serde_json::Value>);

/// Collects a span's or event's fields as JSON; `message` is kept apart.
#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .insert(field.name().to_string(), format!("{value:?}").into());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields.insert(field.name().to_string(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }
}

impl FieldVisitor {
    fn try_key(&self) -> Option<TryKey> {
        let int = |name: &str| self.fields.get(name).and_then(|v| v.as_i64());
        let text = |name: &str| {
            self.fields
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Some(TryKey {
            run_id: int("run_id")?,
            task_instance_id: int("task_instance_id")?,
            try_number: i32::try_from(int("try_number")?).ok()?,
            task_name: text("task"),
            map_key: text("key"),
        })
    }
}

/// One try's captured lines not yet written, and how many it has had.
struct TryBuffer {
    key: TryKey,
    pending: Vec<TaskLogLine>,
    kept: usize,
    dropped: u64,
}

/// Where captured lines wait for the worker to write them. Cloning shares the buffer.
#[derive(Clone)]
pub struct TaskLogSink {
    tries: Arc<Mutex<HashMap<TaskInstanceId, TryBuffer>>>,
    max_lines_per_try: usize,
}

static GLOBAL: OnceLock<TaskLogSink> = OnceLock::new();

impl TaskLogSink {
    /// The process-wide sink that [`TaskLogLayer`] fills and every engine of the process drains. The first call
    /// fixes the per-try bound.
    pub fn global(max_lines_per_try: usize) -> TaskLogSink {
        GLOBAL
            .get_or_init(|| TaskLogSink {
                tries: Arc::default(),
                max_lines_per_try: max_lines_per_try.max(1),
            })
            .clone()
    }

    /// The process-wide sink if a layer was installed.
    pub fn installed() -> Option<TaskLogSink> {
        GLOBAL.get().cloned()
    }

    fn push(&self, key: &TryKey, line: TaskLogLine) {
        let Ok(mut tries) = self.tries.lock() else {
            return;
        };
        let buffer = tries
            .entry(key.task_instance_id)
            .or_insert_with(|| TryBuffer {
                key: key.clone(),
                pending: Vec::new(),
                kept: 0,
                dropped: 0,
            });
        if buffer.key.try_number != key.try_number {
            // A new try of the same instance in this process: start its count afresh.
            *buffer = TryBuffer {
                key: key.clone(),
                pending: std::mem::take(&mut buffer.pending),
                kept: 0,
                dropped: 0,
            };
        }
        if buffer.kept < self.max_lines_per_try {
            buffer.kept += 1;
            buffer.pending.push(line);
        } else {
            buffer.dropped += 1;
        }
    }

    /// Takes every pending line; the tries in `finished` are forgotten, with a closing notice for each that had
    /// lines dropped.
    pub fn drain(&self, finished: &[TaskInstanceId]) -> Vec<TaskLogLine> {
        let Ok(mut tries) = self.tries.lock() else {
            return Vec::new();
        };
        let mut lines: Vec<TaskLogLine> = tries
            .values_mut()
            .flat_map(|b| std::mem::take(&mut b.pending))
            .collect();
        for id in finished {
            if let Some(b) = tries.remove(id)
                && b.dropped > 0
            {
                lines.push(TaskLogLine {
                    run_id: b.key.run_id,
                    task_instance_id: b.key.task_instance_id,
                    task_name: b.key.task_name.clone(),
                    map_key: b.key.map_key.clone(),
                    try_number: b.key.try_number,
                    logged_at: Utc::now(),
                    level: LogLevel::Warn,
                    target: module_path!().to_string(),
                    message: format!(
                        "{} more log lines of this try were not kept ([scheduler] task_log_max_lines = {})",
                        b.dropped, self.max_lines_per_try
                    ),
                    fields: serde_json::Map::new(),
                });
            }
        }
        lines.sort_by_key(|l| l.logged_at);
        lines
    }
}

/// The capturing layer; install it next to the formatter (`registry().with(fmt).with(TaskLogLayer::new(..))`).
pub struct TaskLogLayer {
    sink: TaskLogSink,
    level: Level,
}

impl TaskLogLayer {
    /// Captures events at `level` or more severe, keeping at most `max_lines_per_try` lines of a try.
    pub fn new(level: Level, max_lines_per_try: usize) -> TaskLogLayer {
        TaskLogLayer {
            sink: TaskLogSink::global(max_lines_per_try),
            level,
        }
    }

    /// The layer `[scheduler] task_log_level` and `task_log_max_lines` ask for.
    pub fn from_settings(settings: &crate::SchedulerSettings) -> TaskLogLayer {
        TaskLogLayer::new(Self::level(settings), settings.task_log_max_lines)
    }

    /// The tracing level of `[scheduler] task_log_level`. Install the layer with this as its per-layer filter
    /// (`.with_filter(LevelFilter::from_level(..))`): spans and events below it are then never built for
    /// this layer, which keeps an idle daemon from recording every library's debug spans.
    pub fn level(settings: &crate::SchedulerSettings) -> Level {
        match settings.task_log_level {
            LogLevel::Error => Level::ERROR,
            LogLevel::Warn => Level::WARN,
            LogLevel::Info => Level::INFO,
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Trace => Level::TRACE,
        }
    }
}

fn log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

impl<S> Layer<S> for TaskLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let inherited = span
            .parent()
            .and_then(|p| p.extensions().get::<TryKey>().cloned());
        let is_task = attrs.metadata().name() == TASK_SPAN
            && attrs.metadata().target().starts_with("snowpatrol_engine");
        if inherited.is_none() && !is_task {
            return;
        }
        let mut visitor = FieldVisitor::default();
        attrs.record(&mut visitor);
        let key = if is_task {
            visitor.try_key()
        } else {
            inherited
        };
        let Some(key) = key else {
            return;
        };
        let mut ext = span.extensions_mut();
        if !is_task {
            ext.insert(SpanFields(visitor.fields));
        }
        ext.insert(key);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            let mut visitor = FieldVisitor::default();
            values.record(&mut visitor);
            fields.0.extend(visitor.fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() > self.level {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let mut key = None;
        let mut fields = serde_json::Map::new();
        // Leaf first: the innermost span's fields win over its parents'.
        for span in scope {
            let ext = span.extensions();
            if let Some(SpanFields(f)) = ext.get::<SpanFields>() {
                for (k, v) in f {
                    fields.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            if let Some(k) = ext.get::<TryKey>() {
                key = Some(k.clone());
                if ext.get::<SpanFields>().is_none() {
                    break; // the task span itself: its fields are the line's columns
                }
            }
        }
        let Some(key) = key else {
            return;
        };
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        fields.extend(visitor.fields);
        let line = TaskLogLine {
            run_id: key.run_id,
            task_instance_id: key.task_instance_id,
            task_name: key.task_name.clone(),
            map_key: key.map_key.clone(),
            try_number: key.try_number,
            logged_at: Utc::now(),
            level: log_level(event.metadata().level()),
            target: event.metadata().target().to_string(),
            message: visitor.message,
            fields,
        };
        self.sink.push(&key, line);
    }
}
