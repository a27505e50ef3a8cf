//! The product's Prometheus metrics, registered next to the engine's: what on-call needs to see that alerts
//! reach people and that detection runs on fresh data. Cluster-wide gauges read at scrape time through partial
//! indexes and one-row-per-account tables (see [`PipelineStore::scrape_gauges`]); labelled by account at most,
//! never by warehouse, so 10,000 warehouses add no series.

use crate::store::{AlertState, PipelineStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use snowpatrol_engine::metrics::FloatGauge;
use snowpatrol_store::StoreError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Default)]
pub struct PipelineMetrics {
    pub alert_outbox: Family<StateLabel, Gauge>,
    pub oldest_undelivered_age: FloatGauge,
    pub open_incidents: Family<AccountLabel, Gauge>,
    pub open_excess_credits: Family<AccountLabel, FloatGauge>,
    pub newest_hour: Family<AccountLabel, FloatGauge>,
    pub loaded_at: Family<AccountLabel, FloatGauge>,
}

/// The outbox states a scrape reports: the ones that need someone when they grow.
const WATCHED: [AlertState; 3] = [AlertState::Pending, AlertState::Sending, AlertState::Failed];

impl PipelineMetrics {
    /// Registers the families under the `snowpatrol_` prefix.
    pub fn register(&self, root: &mut Registry) {
        let r = root.sub_registry_with_prefix("snowpatrol");
        r.register(
            "alert_outbox",
            "Alerts not delivered yet (pending, sending) or given up on (failed), cluster-wide; a growing pending count or any failed means Slack is not reached",
            self.alert_outbox.clone(),
        );
        r.register(
            "alert_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest pending or sending alert; 0 when every alert is delivered",
            self.oldest_undelivered_age.clone(),
        );
        r.register(
            "open_incidents",
            "Open incidents (alerted, not acknowledged, not resolved) by Snowflake account",
            self.open_incidents.clone(),
        );
        r.register(
            "open_incident_excess_credits",
            "Excess credits of the open incidents by Snowflake account",
            self.open_excess_credits.clone(),
        );
        r.register(
            "metering_newest_hour_timestamp_seconds",
            "START_TIME of the newest hourly metering row loaded, by Snowflake account: time() minus this is how stale detection is",
            self.newest_hour.clone(),
        );
        r.register(
            "metering_loaded_timestamp_seconds",
            "When prep last loaded metering of each Snowflake account",
            self.loaded_at.clone(),
        );
        for s in WATCHED {
            let _ = self.alert_outbox.get_or_create(&StateLabel {
                state: s.as_str().into(),
            });
        }
    }

    /// Reloads the gauges from the database.
    pub async fn refresh(&self, store: &PipelineStore) -> Result<(), StoreError> {
        let g = store.scrape_gauges().await?;
        let now = snowpatrol_store::now();
        let secs = |at: chrono::DateTime<chrono::Utc>| at.timestamp_micros() as f64 / 1e6;
        for s in WATCHED {
            let n = g
                .outbox
                .iter()
                .find(|(st, _)| *st == s)
                .map_or(0, |(_, n)| *n);
            self.alert_outbox
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n);
        }
        self.oldest_undelivered_age
            .set(g.oldest_undelivered.map_or(0.0, |at| {
                ((now - at).num_milliseconds() as f64 / 1e3).max(0.0)
            }));
        self.open_incidents.clear();
        self.open_excess_credits.clear();
        for (account, n, excess) in g.open_incidents {
            let label = AccountLabel { account };
            self.open_incidents.get_or_create(&label).set(n);
            self.open_excess_credits.get_or_create(&label).set(excess);
        }
        self.newest_hour.clear();
        self.loaded_at.clear();
        for (account, newest, loaded) in g.freshness {
            let label = AccountLabel { account };
            self.newest_hour.get_or_create(&label).set(secs(newest));
            self.loaded_at.get_or_create(&label).set(secs(loaded));
        }
        Ok(())
    }
}
