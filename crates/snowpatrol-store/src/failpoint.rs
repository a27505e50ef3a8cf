//! Named fault-injection points for the fault suite (`crates/snowpatrol/tests/faults.rs`).
//!
//! `SNOWPATROL_FAILPOINTS="prep.load.before_commit=kill,train.after_register=kill@3"` makes this process kill
//! itself with SIGKILL (the same as `kill -9` from outside: no destructor, no rollback message, connections
//! simply drop) the first time (or the N-th time, `@N`) the named point is passed; `=error` makes the point
//! return an error instead (not a connection-level one, so the task's try counts and it is retried within
//! its retries, then fails). Unset, a point costs one lookup in an
//! empty map. Hand-written rather than the `fail` crate because the suite needs a real SIGKILL at an exact
//! step of a real daemon process, which `fail`'s actions (panic, sleep, pause, return) do not give, and
//! because `fail` compiles its points only under a cargo feature the test binary cannot switch on for the
//! `snowpatrol` binary it spawns.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable listing the armed points.
pub const FAILPOINTS_ENV: &str = "SNOWPATROL_FAILPOINTS";

#[derive(Debug)]
enum Action {
    Kill,
    Error,
}

#[derive(Debug)]
struct Point {
    action: Action,
    /// Passes before the action fires (`@N` fires on the N-th pass).
    remaining: AtomicU32,
}

fn points() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        let spec = std::env::var(FAILPOINTS_ENV).unwrap_or_default();
        spec.split(',')
            .filter_map(|item| {
                let (name, action) = item.trim().split_once('=')?;
                let (action, nth) = match action.split_once('@') {
                    Some((a, n)) => (a, n.parse::<u32>().ok()?.max(1)),
                    None => (action, 1),
                };
                let action = match action {
                    "kill" => Action::Kill,
                    "error" => Action::Error,
                    other => {
                        tracing::warn!(
                            point = name,
                            action = other,
                            "unknown failpoint action ignored (use kill or error)"
                        );
                        return None;
                    }
                };
                Some((
                    name.to_string(),
                    Point {
                        action,
                        remaining: AtomicU32::new(nth),
                    },
                ))
            })
            .collect()
    })
}

/// Passes the named point: a no-op unless armed through [`FAILPOINTS_ENV`].
pub fn failpoint(name: &str) -> Result<(), crate::StoreError> {
    let Some(point) = points().get(name) else {
        return Ok(());
    };
    // Fires once, on the pass that takes `remaining` from 1 to 0.
    if point.remaining.fetch_sub(1, Ordering::SeqCst) != 1 {
        return Ok(());
    }
    match point.action {
        Action::Kill => {
            eprintln!("failpoint {name}: killing this process with SIGKILL");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
        Action::Error => Err(crate::StoreError::Corrupt(format!("failpoint {name}"))),
    }
}
