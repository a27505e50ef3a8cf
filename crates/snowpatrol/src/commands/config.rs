//! Configuration and schema: `config check`, `migrate`.

use super::print;
use crate::app::{connect, validate};
use crate::settings::LoadedConfig;
use anyhow::Context;
use secrecy::ExposeSecret;
use serde_json::json;
use snowpatrol_engine::Jobs;
use snowpatrol_store::redact_url;
use std::process::ExitCode;

/// `snowpatrol migrate`: brings the engine's and the pipeline's tables up to date.
pub(crate) async fn migrate(loaded: &LoadedConfig, json: bool) -> anyhow::Result<ExitCode> {
    let db = connect(&loaded.settings, false).await?;
    snowpatrol_pipeline::migrate(&db)
        .await
        .with_context(|| format!("migrating {}", db.url_redacted()))?;
    print(
        json,
        &json!({ "migrated": true, "database": db.url_redacted() }),
        || format!("migrated {} ({})", db.url_redacted(), db.backend_name()),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `snowpatrol config check`: validates the configuration as the daemon and `run` do, and says what is in
/// effect (secrets by where they came from, never by value).
pub(crate) async fn check(loaded: &LoadedConfig, json: bool) -> anyhow::Result<ExitCode> {
    let (jobs, pipeline) = validate(loaded).await?;
    let source = pipeline.source_description();
    let grants = pipeline.config.snowflake_grants();
    let slack = match pipeline.slack_channel() {
        Some(channel) => format!("Slack, default channel {channel}"),
        None => format!(
            "no Slack token: alerts are written under {}",
            loaded.settings.data_dir().join("alerts").display()
        ),
    };
    let s = &loaded.settings;
    let database = match s.database_url() {
        Some(u) => redact_url(u.expose_secret()),
        None => format!(
            "sqlite://{} (embedded)",
            s.data_dir().join("snowpatrol.db").display()
        ),
    };
    let list: Vec<_> = jobs
        .jobs
        .values()
        .map(|j| json!({ "job": j.name(), "schedule": j.schedule_text() }))
        .collect();
    // Secrets by where they came from, never by value.
    let secrets: Vec<_> = loaded
        .secrets
        .iter()
        .map(|o| json!({ "key": o.path, "value": snowpatrol_store::REDACTED, "from": o.origin }))
        .collect();
    let report = json!({
        "ok": true,
        "file": loaded.file_display(),
        "database": database,
        "health_addr": s.server.health_addr.to_string(),
        "data_dir": s.data_dir().display().to_string(),
        "source": source,
        "snowflake_grants": grants,
        "alerts": slack,
        "secrets": secrets,
        "jobs": list,
    });
    print(json, &report, || {
        let mut out = format!(
            "configuration OK: {}\ndatabase: {database}\nhealth: {}\nsource: {source}\nalerts: {slack}",
            loaded.file_display(),
            s.server.health_addr
        );
        if !grants.is_empty() {
            out.push_str("\nsnowflake grants this configuration needs:");
            for g in &grants {
                out.push_str(&format!("\n  {g}"));
            }
        }
        out.push_str("\nsecrets:");
        push_secrets_and_jobs(&mut out, loaded, &jobs);
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The end of `config check`'s text: each secret (by where it came from, never its value), then each job.
fn push_secrets_and_jobs(out: &mut String, loaded: &LoadedConfig, jobs: &Jobs) {
    if loaded.secrets.is_empty() {
        out.push_str(" (none)");
    }
    for o in &loaded.secrets {
        out.push_str(&format!(
            "\n  {}: {} (from {})",
            o.path,
            snowpatrol_store::REDACTED,
            o.origin
        ));
    }
    out.push_str("\njobs:");
    if jobs.jobs.is_empty() {
        out.push_str(" (none)");
    }
    for j in jobs.jobs.values() {
        out.push_str(&format!("\n  {}: {}", j.name(), j.schedule_text()));
    }
}
