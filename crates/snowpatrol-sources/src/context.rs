//! What Snowflake says around the metering: root causes of anomalous warehouse-days, the warehouses' object
//! tags (for routing) and the effective price of a credit (for money).
//!
//! Every lookup is batched: one statement per view per call, whatever the number of warehouse-days asked about,
//! so a run with 300 incidents costs the same handful of queries as a run with one. The wanted warehouse-days
//! travel as bound rows of a `VALUES` list joined to the view, so the view is read only for those warehouses
//! on those days.
//!
//! A view the role may not read is not an error of the lookup: its days get a line in
//! [`RootCause::unavailable`] naming the grant, and the rest is still found. Only what a retry can fix (the
//! network) fails the call.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, Utc};
use snowflake_connector_rs::bind::TimestampLtz;
use snowflake_connector_rs::{FromRow, Session, Statement};
use snowpatrol_detect::WarehouseKey;
use snowpatrol_detect::root_cause::{
    Attribution, AttributionBasis, Contributor, QueryGroup, RootCause, WarehouseChange,
    WarehouseDay, WarehouseEvent,
};

use crate::{SnowflakeSource, SourceError};

/// The effective price of one credit for an account on a day: `USAGE_IN_CURRENCY / USAGE` of compute in
/// `ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreditRate {
    pub account_name: String,
    pub day: NaiveDate,
    /// ISO code of the contract currency, e.g. `USD`.
    pub currency: String,
    pub credits: f64,
    pub amount: f64,
}

impl CreditRate {
    pub fn price_per_credit(&self) -> f64 {
        if self.credits > 0.0 {
            self.amount / self.credits
        } else {
            0.0
        }
    }
}

/// Object tags of one warehouse: tag name (`DATABASE.SCHEMA.TAG`) -> value.
pub type WarehouseTags = BTreeMap<String, String>;

/// A source of context for anomalies (only Snowflake has one).
#[async_trait]
pub trait ContextSource: Send + Sync {
    /// Root causes of `days`. Every day asked about gets an entry, with what was found and what was not.
    async fn root_causes(
        &self,
        days: &[WarehouseDay],
    ) -> Result<BTreeMap<WarehouseDay, RootCause>, SourceError>;

    /// Object tags set on `warehouses` (`ACCOUNT_USAGE.TAG_REFERENCES`); warehouses without tags are absent.
    async fn warehouse_tags(
        &self,
        warehouses: &[WarehouseKey],
    ) -> Result<BTreeMap<WarehouseKey, WarehouseTags>, SourceError>;

    /// Effective credit prices per account and day in [from, to).
    async fn credit_rates(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CreditRate>, SourceError>;
}

/// How many entries each list of an [`Attribution`] keeps, and how many events per warehouse-day.
const TOP: usize = 5;
const MAX_EVENTS: usize = 50;

const ATTRIBUTION_SQL: &str = "\
WITH wanted (WAREHOUSE_NAME, DAY, T0, T1) AS (SELECT column1, column2, column3::TIMESTAMP_LTZ, column4::TIMESTAMP_LTZ FROM VALUES {values}), \
base AS (\
  SELECT w.WAREHOUSE_NAME, w.DAY, a.QUERY_PARAMETERIZED_HASH AS QHASH, COALESCE(a.QUERY_TAG, '') AS QUERY_TAG, \
         COALESCE(a.USER_NAME, '') AS USER_NAME, COALESCE(q.ROLE_NAME, '') AS ROLE_NAME, q.QUERY_TEXT, \
         COALESCE(a.CREDITS_ATTRIBUTED_COMPUTE, 0) AS WEIGHT \
  FROM SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY a \
  JOIN wanted w ON a.WAREHOUSE_NAME = w.WAREHOUSE_NAME AND a.START_TIME >= w.T0 AND a.START_TIME < w.T1 \
  LEFT JOIN SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY q ON q.QUERY_ID = a.QUERY_ID AND q.START_TIME >= w.T0 AND q.START_TIME < w.T1\
){ranked}";

const EXECUTION_TIME_SQL: &str = "\
WITH wanted (WAREHOUSE_NAME, DAY, T0, T1) AS (SELECT column1, column2, column3::TIMESTAMP_LTZ, column4::TIMESTAMP_LTZ FROM VALUES {values}), \
base AS (\
  SELECT w.WAREHOUSE_NAME, w.DAY, q.QUERY_PARAMETERIZED_HASH AS QHASH, COALESCE(q.QUERY_TAG, '') AS QUERY_TAG, \
         COALESCE(q.USER_NAME, '') AS USER_NAME, COALESCE(q.ROLE_NAME, '') AS ROLE_NAME, q.QUERY_TEXT, \
         COALESCE(q.EXECUTION_TIME, 0) / 1000.0 AS WEIGHT \
  FROM SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY q \
  JOIN wanted w ON q.WAREHOUSE_NAME = w.WAREHOUSE_NAME AND q.START_TIME >= w.T0 AND q.START_TIME < w.T1\
){ranked}";

/// The per-dimension rankings both attribution statements share: the top statements (by parameterized hash),
/// users, roles and query tags of each warehouse-day, and its total.
const RANKED_SQL: &str = ", \
ranked AS (\
  SELECT 'QUERY' AS DIMENSION, WAREHOUSE_NAME, DAY, COALESCE(QHASH, '') AS KEY, ANY_VALUE(LEFT(QUERY_TEXT, 300)) AS SAMPLE_TEXT, \
         ANY_VALUE(USER_NAME) AS USER_NAME, ANY_VALUE(ROLE_NAME) AS ROLE_NAME, ANY_VALUE(QUERY_TAG) AS QUERY_TAG, \
         SUM(WEIGHT) AS WEIGHT, COUNT(*) AS QUERIES FROM base GROUP BY WAREHOUSE_NAME, DAY, COALESCE(QHASH, '') \
  UNION ALL SELECT 'USER', WAREHOUSE_NAME, DAY, USER_NAME, NULL, NULL, NULL, NULL, SUM(WEIGHT), COUNT(*) FROM base GROUP BY WAREHOUSE_NAME, DAY, USER_NAME \
  UNION ALL SELECT 'ROLE', WAREHOUSE_NAME, DAY, ROLE_NAME, NULL, NULL, NULL, NULL, SUM(WEIGHT), COUNT(*) FROM base GROUP BY WAREHOUSE_NAME, DAY, ROLE_NAME \
  UNION ALL SELECT 'QUERY_TAG', WAREHOUSE_NAME, DAY, QUERY_TAG, NULL, NULL, NULL, NULL, SUM(WEIGHT), COUNT(*) FROM base GROUP BY WAREHOUSE_NAME, DAY, QUERY_TAG \
  UNION ALL SELECT 'TOTAL', WAREHOUSE_NAME, DAY, '', NULL, NULL, NULL, NULL, SUM(WEIGHT), COUNT(*) FROM base GROUP BY WAREHOUSE_NAME, DAY\
) \
SELECT DIMENSION, WAREHOUSE_NAME, DAY, KEY, SAMPLE_TEXT, USER_NAME, ROLE_NAME, QUERY_TAG, WEIGHT, QUERIES FROM ranked \
QUALIFY ROW_NUMBER() OVER (PARTITION BY DIMENSION, WAREHOUSE_NAME, DAY ORDER BY WEIGHT DESC, KEY) <= {top} \
ORDER BY WAREHOUSE_NAME, DAY, DIMENSION, WEIGHT DESC, KEY";

/// Warehouse events of the wanted days, identical ones collapsed (a day of auto-resumes is one row with a
/// count); `STARTED` halves of two-phase events are left out (their `COMPLETED` row carries the result).
const EVENTS_SQL: &str = "\
WITH wanted (WAREHOUSE_NAME, DAY, T0, T1) AS (SELECT column1, column2, column3::TIMESTAMP_LTZ, column4::TIMESTAMP_LTZ FROM VALUES {values}) \
SELECT w.WAREHOUSE_NAME, w.DAY, e.EVENT_NAME, e.EVENT_REASON, e.USER_NAME, e.ROLE_NAME, e.SIZE, e.CLUSTER_COUNT, \
       MIN(e.TIMESTAMP) AS FIRST_AT, COUNT(*) AS EVENTS \
FROM SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_EVENTS_HISTORY e \
JOIN wanted w ON e.WAREHOUSE_NAME = w.WAREHOUSE_NAME AND e.TIMESTAMP >= w.T0 AND e.TIMESTAMP < w.T1 \
WHERE e.EVENT_STATE IS NULL OR e.EVENT_STATE <> 'STARTED' \
GROUP BY w.WAREHOUSE_NAME, w.DAY, e.EVENT_NAME, e.EVENT_REASON, e.USER_NAME, e.ROLE_NAME, e.SIZE, e.CLUSTER_COUNT \
QUALIFY ROW_NUMBER() OVER (PARTITION BY w.WAREHOUSE_NAME, w.DAY ORDER BY MIN(e.TIMESTAMP)) <= {max} \
ORDER BY 1, 2, FIRST_AT";

/// Successful `ALTER WAREHOUSE` statements from the day before the first wanted day to the end of the last
/// (an auto-suspend turned off last evening explains today); matched to warehouses in Rust, since the
/// warehouse is named in the text, not in a column.
const CHANGES_SQL: &str = "\
SELECT START_TIME, USER_NAME, ROLE_NAME, LEFT(QUERY_TEXT, 500) AS STATEMENT \
FROM SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY \
WHERE START_TIME >= ? AND START_TIME < ? AND UPPER(LTRIM(QUERY_TEXT)) LIKE 'ALTER WAREHOUSE%' \
  AND (EXECUTION_STATUS IS NULL OR EXECUTION_STATUS = 'SUCCESS') \
ORDER BY START_TIME";

const TAGS_SQL: &str = "\
SELECT OBJECT_NAME, TAG_DATABASE, TAG_SCHEMA, TAG_NAME, TAG_VALUE \
FROM SNOWFLAKE.ACCOUNT_USAGE.TAG_REFERENCES \
WHERE DOMAIN = 'WAREHOUSE' AND OBJECT_NAME IN ({names}) \
ORDER BY OBJECT_NAME, TAG_NAME";

const RATES_SQL: &str = "\
SELECT ACCOUNT_NAME, TO_VARCHAR(USAGE_DATE, 'YYYY-MM-DD') AS USAGE_DAY, CURRENCY, SUM(USAGE) AS CREDITS, \
       SUM(USAGE_IN_CURRENCY) AS AMOUNT \
FROM SNOWFLAKE.ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY \
WHERE USAGE_TYPE = 'compute' AND USAGE_DATE >= TO_DATE(?) AND USAGE_DATE < TO_DATE(?) \
GROUP BY ACCOUNT_NAME, USAGE_DATE, CURRENCY HAVING SUM(USAGE) > 0 \
ORDER BY 1, 2";

#[derive(FromRow)]
struct RankedRow {
    dimension: String,
    warehouse_name: String,
    day: String,
    key: Option<String>,
    sample_text: Option<String>,
    user_name: Option<String>,
    role_name: Option<String>,
    query_tag: Option<String>,
    weight: Option<f64>,
    queries: i64,
}

#[derive(FromRow)]
struct EventRow {
    warehouse_name: String,
    day: String,
    event_name: String,
    event_reason: Option<String>,
    user_name: Option<String>,
    role_name: Option<String>,
    size: Option<String>,
    cluster_count: Option<i64>,
    first_at: DateTime<Utc>,
    events: i64,
}

#[derive(FromRow)]
struct ChangeRow {
    start_time: DateTime<Utc>,
    user_name: Option<String>,
    role_name: Option<String>,
    statement: Option<String>,
}

#[derive(FromRow)]
struct TagRow {
    object_name: String,
    tag_database: Option<String>,
    tag_schema: Option<String>,
    tag_name: String,
    tag_value: Option<String>,
}

#[derive(FromRow)]
struct RateRow {
    account_name: String,
    usage_day: String,
    currency: String,
    credits: f64,
    amount: f64,
}

fn ltz(t: DateTime<Utc>) -> Result<TimestampLtz, SourceError> {
    TimestampLtz::try_from(t)
        .map_err(|e| SourceError::Config(format!("cannot bind timestamp {t}: {e}")))
}

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn parse_day(s: &str) -> Result<NaiveDate, SourceError> {
    NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").map_err(|e| SourceError::Data {
        message: format!("day {s:?} is not YYYY-MM-DD: {e}"),
    })
}

/// The `VALUES` rows of the wanted warehouse-days and their binds (name, day, start, end of the UTC day).
fn wanted_statement(
    sql: String,
    days: &[(String, NaiveDate)],
) -> Result<Statement<snowflake_connector_rs::PositionalBinds>, SourceError> {
    let values = vec!["(?, ?, ?, ?)"; days.len()].join(", ");
    let mut st = Statement::new_positional(sql.replace("{values}", &values));
    for (name, day) in days {
        let end = day.checked_add_days(Days::new(1)).unwrap_or(*day);
        st = st
            .bind(name.clone())
            .bind(day.format("%Y-%m-%d").to_string())
            .bind(ltz(day_start(*day))?)
            .bind(ltz(day_start(end))?);
    }
    Ok(st)
}

/// The name in `ALTER WAREHOUSE [IF EXISTS] <name> ...`, unquoted (a quoted name keeps its case; an unquoted
/// one is upper-cased, as Snowflake resolves it).
pub fn altered_warehouse(statement: &str) -> Option<String> {
    let mut rest = statement.trim_start();
    for word in ["ALTER", "WAREHOUSE"] {
        let head = rest.get(..word.len())?;
        if !head.eq_ignore_ascii_case(word) {
            return None;
        }
        rest = rest[word.len()..].trim_start();
    }
    if rest
        .get(..9)
        .is_some_and(|h| h.eq_ignore_ascii_case("IF EXISTS"))
    {
        rest = rest[9..].trim_start();
    }
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some(quoted[..end].to_string());
    }
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
        .collect();
    (!name.is_empty()).then(|| name.to_ascii_uppercase())
}

impl SnowflakeSource {
    /// The grant that lets the role read `view` (an `ACCOUNT_USAGE` view, or the organisation's currency view).
    fn context_grant_hint(&self, view: &str) -> String {
        let role = self.grant_role();
        let database_role = match view {
            "QUERY_HISTORY" | "TAG_REFERENCES" => "GOVERNANCE_VIEWER",
            "USAGE_IN_CURRENCY_DAILY" => {
                return format!(
                    "the role cannot read SNOWFLAKE.ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY: `GRANT DATABASE ROLE \
                     SNOWFLAKE.ORGANIZATION_BILLING_VIEWER TO ROLE {role}` (in the organization account), or set \
                     [pipeline] price_per_credit instead"
                );
            }
            _ => "USAGE_VIEWER",
        };
        format!(
            "the role cannot read SNOWFLAKE.ACCOUNT_USAGE.{view}: `GRANT DATABASE ROLE SNOWFLAKE.{database_role} TO ROLE \
             {role}` (or `GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE {role}`)"
        )
    }

    /// Runs `st`, mapping errors; a permission error comes back as `Ok(Err(hint))` so the caller can note it
    /// and go on.
    async fn rows<T: FromRow + Send + 'static>(
        &self,
        session: &Session,
        st: Statement<snowflake_connector_rs::PositionalBinds>,
        view: &str,
    ) -> Result<Result<Vec<T>, String>, SourceError> {
        self.context_statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result: Result<Vec<T>, SourceError> = async {
            let mut cursor = session
                .query_as::<T, _>(st)
                .await
                .map_err(|e| self.map_error(&e))?;
            let mut out = Vec::new();
            while let Some(table) = cursor.next_table().await.map_err(|e| self.map_error(&e))? {
                for row in table.rows() {
                    out.push(row.map_err(|e| self.map_error(&e))?);
                }
            }
            Ok(out)
        }
        .await;
        match result {
            Ok(rows) => Ok(Ok(rows)),
            Err(SourceError::Permission { message, .. }) => Ok(Err(format!(
                "{message}. Hint: {}",
                self.context_grant_hint(view)
            ))),
            Err(e) => Err(e),
        }
    }

    async fn attribution(
        &self,
        session: &Session,
        days: &[(String, NaiveDate)],
        found: &mut BTreeMap<(String, NaiveDate), RootCause>,
    ) -> Result<(), SourceError> {
        let ranked = RANKED_SQL.replace("{top}", &TOP.to_string());
        let credits = ATTRIBUTION_SQL.replace("{ranked}", &ranked);
        let (rows, basis) = match self
            .rows::<RankedRow>(
                session,
                wanted_statement(credits, days)?,
                "QUERY_ATTRIBUTION_HISTORY",
            )
            .await?
        {
            Ok(rows) => (rows, AttributionBasis::Credits),
            Err(why) => {
                let time = EXECUTION_TIME_SQL.replace("{ranked}", &ranked);
                match self
                    .rows::<RankedRow>(session, wanted_statement(time, days)?, "QUERY_HISTORY")
                    .await?
                {
                    Ok(rows) => {
                        for c in found.values_mut() {
                            c.unavailable.push(format!(
                                "credits per query (QUERY_ATTRIBUTION_HISTORY): {why}; shares of execution time shown instead"
                            ));
                        }
                        (rows, AttributionBasis::ExecutionSeconds)
                    }
                    Err(why_history) => {
                        for c in found.values_mut() {
                            c.unavailable
                                .push(format!("queries (QUERY_ATTRIBUTION_HISTORY): {why}"));
                            c.unavailable
                                .push(format!("queries (QUERY_HISTORY): {why_history}"));
                        }
                        return Ok(());
                    }
                }
            }
        };
        for cause in found.values_mut() {
            cause.attribution = Some(Attribution {
                basis,
                total_weight: 0.0,
                queries: 0,
                top_queries: Vec::new(),
                users: Vec::new(),
                roles: Vec::new(),
                query_tags: Vec::new(),
            });
        }
        for r in rows {
            let day = parse_day(&r.day)?;
            let Some(a) = found
                .get_mut(&(r.warehouse_name.clone(), day))
                .and_then(|c| c.attribution.as_mut())
            else {
                continue;
            };
            let weight = r.weight.unwrap_or(0.0);
            let queries = r.queries.max(0) as u64;
            let key = r.key.unwrap_or_default();
            let contributor = |name: String| Contributor {
                name,
                weight,
                queries,
            };
            match r.dimension.as_str() {
                "QUERY" => a.top_queries.push(QueryGroup {
                    parameterized_hash: key,
                    sample_text: r.sample_text,
                    user_name: r.user_name.filter(|s| !s.is_empty()),
                    role_name: r.role_name.filter(|s| !s.is_empty()),
                    query_tag: r.query_tag.filter(|s| !s.is_empty()),
                    weight,
                    queries,
                }),
                "USER" => a.users.push(contributor(key)),
                "ROLE" => a.roles.push(contributor(key)),
                "QUERY_TAG" => a.query_tags.push(contributor(key)),
                "TOTAL" => {
                    a.total_weight = weight;
                    a.queries = queries;
                }
                other => {
                    return Err(SourceError::Data {
                        message: format!("unexpected attribution dimension {other:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    async fn events(
        &self,
        session: &Session,
        days: &[(String, NaiveDate)],
        found: &mut BTreeMap<(String, NaiveDate), RootCause>,
    ) -> Result<(), SourceError> {
        let sql = EVENTS_SQL.replace("{max}", &MAX_EVENTS.to_string());
        match self
            .rows::<EventRow>(
                session,
                wanted_statement(sql, days)?,
                "WAREHOUSE_EVENTS_HISTORY",
            )
            .await?
        {
            Ok(rows) => {
                for r in rows {
                    let day = parse_day(&r.day)?;
                    if let Some(c) = found.get_mut(&(r.warehouse_name, day)) {
                        c.events.push(WarehouseEvent {
                            at: r.first_at,
                            name: r.event_name,
                            reason: r.event_reason,
                            user_name: r.user_name,
                            role_name: r.role_name,
                            size: r.size,
                            cluster_count: r.cluster_count,
                            count: r.events.max(0) as u64,
                        });
                    }
                }
            }
            Err(why) => {
                for c in found.values_mut() {
                    c.unavailable.push(format!(
                        "warehouse events (WAREHOUSE_EVENTS_HISTORY): {why}"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn changes(
        &self,
        session: &Session,
        days: &[(String, NaiveDate)],
        found: &mut BTreeMap<(String, NaiveDate), RootCause>,
    ) -> Result<(), SourceError> {
        let (Some(first), Some(last)) = (
            days.iter().map(|(_, d)| *d).min(),
            days.iter().map(|(_, d)| *d).max(),
        ) else {
            return Ok(());
        };
        let from = day_start(first.checked_sub_days(Days::new(1)).unwrap_or(first));
        let to = day_start(last.checked_add_days(Days::new(1)).unwrap_or(last));
        let st = Statement::new_positional(CHANGES_SQL)
            .bind(ltz(from)?)
            .bind(ltz(to)?);
        match self.rows::<ChangeRow>(session, st, "QUERY_HISTORY").await? {
            Ok(rows) => {
                for r in rows {
                    let statement = r.statement.unwrap_or_default();
                    let Some(name) = altered_warehouse(&statement) else {
                        continue;
                    };
                    let day = r.start_time.date_naive();
                    // A change counts for its own day and the next one.
                    for d in [Some(day), day.checked_add_days(Days::new(1))]
                        .into_iter()
                        .flatten()
                    {
                        if let Some(c) = found.get_mut(&(name.clone(), d)) {
                            c.changes.push(WarehouseChange {
                                at: r.start_time,
                                user_name: r.user_name.clone(),
                                role_name: r.role_name.clone(),
                                statement: statement.clone(),
                            });
                        }
                    }
                }
            }
            Err(why) => {
                for c in found.values_mut() {
                    c.unavailable
                        .push(format!("warehouse changes (QUERY_HISTORY): {why}"));
                }
            }
        }
        Ok(())
    }

    /// The account whose `ACCOUNT_USAGE` the connection reads, or why there is none.
    fn context_account(&self) -> Result<&str, String> {
        self.account_name.as_deref().ok_or_else(|| {
            "set [source.snowflake] account_name to the ACCOUNT_NAME of the account Snowpatrol logs in to: \
             ACCOUNT_USAGE views describe only that account"
                .to_string()
        })
    }
}

#[async_trait]
impl ContextSource for SnowflakeSource {
    async fn root_causes(
        &self,
        days: &[WarehouseDay],
    ) -> Result<BTreeMap<WarehouseDay, RootCause>, SourceError> {
        let mut out: BTreeMap<WarehouseDay, RootCause> = days
            .iter()
            .map(|d| (d.clone(), RootCause::default()))
            .collect();
        let account = match self.context_account() {
            Ok(a) => a.to_string(),
            Err(why) => {
                for c in out.values_mut() {
                    c.unavailable.push(format!("root cause: {why}"));
                }
                return Ok(out);
            }
        };
        let mut found: BTreeMap<(String, NaiveDate), RootCause> = BTreeMap::new();
        for (d, c) in out.iter_mut() {
            if d.key.account_name == account {
                found.insert((d.key.warehouse_name.clone(), d.day), RootCause::default());
            } else {
                c.unavailable.push(format!(
                    "root cause: Snowpatrol reads ACCOUNT_USAGE of {account}, the account it logs in to; account {} \
                     needs a connection of its own",
                    d.key.account_name
                ));
            }
        }
        if found.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<(String, NaiveDate)> = found.keys().cloned().collect();
        let started = std::time::Instant::now();
        let session = self.session().await?;
        self.attribution(&session, &wanted, &mut found).await?;
        self.events(&session, &wanted, &mut found).await?;
        self.changes(&session, &wanted, &mut found).await?;
        tracing::info!(
            days = wanted.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "looked up root causes (3 statements)"
        );
        for (d, c) in out
            .iter_mut()
            .filter(|(d, _)| d.key.account_name == account)
        {
            if let Some(f) = found.remove(&(d.key.warehouse_name.clone(), d.day)) {
                *c = f;
            }
        }
        Ok(out)
    }

    async fn warehouse_tags(
        &self,
        warehouses: &[WarehouseKey],
    ) -> Result<BTreeMap<WarehouseKey, WarehouseTags>, SourceError> {
        let Ok(account) = self.context_account() else {
            return Ok(BTreeMap::new());
        };
        let names: Vec<&str> = warehouses
            .iter()
            .filter(|k| k.account_name == account)
            .map(|k| k.warehouse_name.as_str())
            .collect();
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let sql = TAGS_SQL.replace("{names}", &vec!["?"; names.len()].join(", "));
        let mut st = Statement::new_positional(sql);
        for n in &names {
            st = st.bind(n.to_string());
        }
        let session = self.session().await?;
        let rows = match self.rows::<TagRow>(&session, st, "TAG_REFERENCES").await? {
            Ok(rows) => rows,
            Err(why) => {
                tracing::warn!(%why, "warehouse tags not readable; routes that match tags will not match");
                return Ok(BTreeMap::new());
            }
        };
        let mut out: BTreeMap<WarehouseKey, WarehouseTags> = BTreeMap::new();
        for r in rows {
            let name = [r.tag_database, r.tag_schema, Some(r.tag_name)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(".");
            out.entry(WarehouseKey::new(account, &r.object_name))
                .or_default()
                .insert(name, r.tag_value.unwrap_or_default());
        }
        Ok(out)
    }

    async fn credit_rates(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<CreditRate>, SourceError> {
        let st = Statement::new_positional(RATES_SQL)
            .bind(from.format("%Y-%m-%d").to_string())
            .bind(to.format("%Y-%m-%d").to_string());
        let session = self.session().await?;
        match self
            .rows::<RateRow>(&session, st, "USAGE_IN_CURRENCY_DAILY")
            .await?
        {
            Ok(rows) => rows
                .into_iter()
                .map(|r| {
                    Ok(CreditRate {
                        day: parse_day(&r.usage_day)?,
                        account_name: r.account_name,
                        currency: r.currency,
                        credits: r.credits,
                        amount: r.amount,
                    })
                })
                .collect(),
            Err(why) => Err(SourceError::Permission {
                message: "cannot read USAGE_IN_CURRENCY_DAILY".into(),
                hint: why,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn altered_warehouse_reads_the_name_as_snowflake_resolves_it() {
        assert_eq!(
            altered_warehouse("alter warehouse etl_wh set auto_suspend = 0").as_deref(),
            Some("ETL_WH")
        );
        assert_eq!(
            altered_warehouse("  ALTER WAREHOUSE IF EXISTS \"Mixed Case\" SUSPEND").as_deref(),
            Some("Mixed Case")
        );
        assert_eq!(altered_warehouse("ALTER WAREHOUSE"), None);
        assert_eq!(altered_warehouse("ALTER TABLE t ADD COLUMN x INT"), None);
        assert_eq!(altered_warehouse("é"), None);
    }
}
