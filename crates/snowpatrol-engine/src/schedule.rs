//! Cron schedules in an IANA time zone, computed with croner on zoned times so DST is handled: a local time
//! that does not exist (spring forward) and one that happens twice (fall back) are resolved by croner on the
//! real calendar of the zone, and every tick is then stored as a UTC instant.

use chrono::Timelike;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

#[derive(Clone, Debug)]
pub struct CronSchedule {
    pub expression: String,
    pub timezone: Tz,
    cron: Cron,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "invalid cron expression `{expression}`: {reason} (use 5 fields `minute hour day-of-month month day-of-week`, e.g. `0 6 * * *`, or @hourly/@daily/@weekly/@monthly)"
    )]
    Cron { expression: String, reason: String },
    #[error("unknown time zone `{0}` (use an IANA name such as `UTC` or `Europe/Berlin`)")]
    TimeZone(String),
}

impl CronSchedule {
    pub fn new(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz =
            Tz::from_str(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_string()))?;
        let trimmed = expression.trim();
        if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
            return Err(ScheduleError::Cron {
                expression: expression.to_string(),
                reason: format!(
                    "expected 5 fields, found {}",
                    trimmed.split_whitespace().count()
                ),
            });
        }
        let cron = Cron::from_str(trimmed).map_err(|e| ScheduleError::Cron {
            expression: expression.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            expression: trimmed.to_string(),
            timezone: tz,
            cron,
        })
    }

    /// The first tick strictly after `after`, on a whole second: croner carries the fraction of a second of
    /// its input into the result (the 19:35 tick came out as 19:35:00.567653), and a run's logical time must
    /// be the tick itself. Searching from the whole second at or before `after` still returns a tick after it:
    /// ticks are whole seconds, so none lies strictly between the two.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let whole = after.with_nanosecond(0).unwrap_or(after);
        let local = whole.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .map(|t| t.with_nanosecond(0).unwrap_or(t))
    }

    /// Ticks in (`after`, `up_to`], at most `limit` of them (the newest ones if there are more).
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        up_to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = std::collections::VecDeque::new();
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor) {
            if next > up_to {
                break;
            }
            ticks.push_back(next);
            if ticks.len() > limit {
                ticks.pop_front();
            }
            cursor = next;
        }
        ticks.into()
    }

    pub fn describe(&self) -> String {
        format!("cron `{}` ({})", self.expression, self.timezone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ticks_are_whole_seconds_whatever_the_time_they_are_computed_from() {
        let s = CronSchedule::new("35 19 * * *", "UTC").unwrap();
        let tick = Utc.with_ymd_and_hms(2026, 12, 3, 19, 35, 0).unwrap();
        for after in [
            tick - chrono::Duration::microseconds(432_347),
            tick - chrono::Duration::hours(3) + chrono::Duration::microseconds(567_653),
        ] {
            assert_eq!(s.next_after(after), Some(tick), "from {after}");
        }
        // Just after the tick (a leader running a few milliseconds late): the next day's, never the same one.
        let late = tick + chrono::Duration::microseconds(273_341);
        assert_eq!(s.next_after(late), Some(tick + chrono::Duration::days(1)));
        assert_eq!(s.next_after(tick), Some(tick + chrono::Duration::days(1)));
    }

    #[test]
    fn daily_in_berlin_across_spring_forward_and_fall_back() {
        let s = CronSchedule::new("30 2 * * *", "Europe/Berlin").unwrap();
        // 2026-03-29: clocks jump 02:00 -> 03:00 in Berlin; 02:30 does not exist that day.
        let start = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let ticks = s.ticks_between(
            start,
            Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap(),
            100,
        );
        let local: Vec<String> = ticks
            .iter()
            .map(|t| {
                t.with_timezone(&s.timezone)
                    .format("%m-%d %H:%M %Z")
                    .to_string()
            })
            .collect();
        // One tick per day; each at 02:30 local where it exists; UTC offsets change across the transition.
        assert_eq!(ticks.len(), 4, "{local:?}");
        assert_eq!(
            ticks[0],
            Utc.with_ymd_and_hms(2026, 3, 28, 1, 30, 0).unwrap()
        );
        assert_eq!(
            ticks[3],
            Utc.with_ymd_and_hms(2026, 3, 31, 0, 30, 0).unwrap()
        );
        // Fall back 2026-10-25 03:00 -> 02:00: 02:30 happens twice; the job must run once.
        let ticks = s.ticks_between(
            Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 26, 12, 0, 0).unwrap(),
            100,
        );
        assert_eq!(ticks.len(), 2, "{ticks:?}");
    }

    #[test]
    fn bad_expressions_are_refused_with_guidance() {
        let e = CronSchedule::new("61 * * * *", "UTC")
            .unwrap_err()
            .to_string();
        assert!(e.contains("61 * * * *"), "{e}");
        let e = CronSchedule::new("* * * *", "UTC").unwrap_err().to_string();
        assert!(e.contains("expected 5 fields"), "{e}");
        let e = CronSchedule::new("@daily", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
        assert!(CronSchedule::new("@daily", "UTC").is_ok());
    }
}
