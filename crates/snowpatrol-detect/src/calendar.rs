//! Business calendars: which days are holidays, and which are the first and last business day of a month.
//!
//! Spend follows the calendar of the people and jobs behind a warehouse: office warehouses go quiet on public
//! holidays, and finance close runs make the last business day of every month heavier. The default model learns
//! how much heavier from history ([`DayClass`]); this module only says which day is which.
//!
//! Hand-written rather than taken from a crate: the only rules needed are a dozen fixed-date and n-th-weekday
//! holidays, and the crates that exist either pull in large data tables or do not expose "observed" dates.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which built-in public-holiday rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolidayRules {
    /// No built-in holidays (only `extra_holidays`).
    None,
    /// The holidays most US businesses close on: the federal holidays without Columbus and Veterans Day, plus
    /// the Friday after Thanksgiving; observed days (Saturday -> Friday, Sunday -> Monday).
    #[default]
    Us,
    /// All eleven US federal holidays, on their observed days (banks, government).
    UsFederal,
}

/// The holiday calendar a model uses: built-in rules plus dates an operator lists (company shutdowns, local
/// holidays).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    pub rules: HolidayRules,
    pub extra_holidays: Vec<NaiveDate>,
}

/// What kind of day a date is, for spend that follows the calendar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DayClass {
    /// A weekday or weekend day with nothing special about it.
    Ordinary,
    /// A public holiday (or an operator-listed one).
    Holiday,
    /// The first business day of its month.
    FirstBusinessDay,
    /// The last business day of its month (month-end close).
    LastBusinessDay,
}

impl DayClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DayClass::Ordinary => "ordinary day",
            DayClass::Holiday => "holiday",
            DayClass::FirstBusinessDay => "first business day of the month",
            DayClass::LastBusinessDay => "last business day of the month",
        }
    }
}

/// A resolved calendar over a date range.
#[derive(Clone, Debug)]
pub struct Calendar {
    holidays: BTreeSet<NaiveDate>,
}

fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n)
}

fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    nth_weekday(year, month, weekday, 5).or_else(|| nth_weekday(year, month, weekday, 4))
}

/// A fixed-date holiday moved to the nearest weekday, as US federal holidays are observed.
fn observed(date: Option<NaiveDate>) -> Option<NaiveDate> {
    let d = date?;
    match d.weekday() {
        Weekday::Sat => d.checked_sub_days(Days::new(1)),
        Weekday::Sun => d.checked_add_days(Days::new(1)),
        _ => Some(d),
    }
}

/// The holidays most US businesses close on (see [`HolidayRules::Us`]).
pub fn us_business_holidays(year: i32) -> Vec<NaiveDate> {
    let columbus = nth_weekday(year, 10, Weekday::Mon, 2);
    let veterans = observed(NaiveDate::from_ymd_opt(year, 11, 11));
    let black_friday = nth_weekday(year, 11, Weekday::Thu, 4).and_then(|d| d.succ_opt());
    let mut v: Vec<NaiveDate> = us_federal_holidays(year)
        .into_iter()
        .filter(|d| Some(*d) != columbus && Some(*d) != veterans)
        .collect();
    v.extend(black_friday);
    v.sort();
    v
}

/// US federal holidays of `year`, on their observed days.
pub fn us_federal_holidays(year: i32) -> Vec<NaiveDate> {
    let ymd = NaiveDate::from_ymd_opt;
    let mut v = vec![
        observed(ymd(year, 1, 1)),
        nth_weekday(year, 1, Weekday::Mon, 3),
        nth_weekday(year, 2, Weekday::Mon, 3),
        last_weekday(year, 5, Weekday::Mon),
        if year >= 2021 {
            observed(ymd(year, 6, 19))
        } else {
            None
        },
        observed(ymd(year, 7, 4)),
        nth_weekday(year, 9, Weekday::Mon, 1),
        nth_weekday(year, 10, Weekday::Mon, 2),
        observed(ymd(year, 11, 11)),
        nth_weekday(year, 11, Weekday::Thu, 4),
        observed(ymd(year, 12, 25)),
    ];
    // New Year's Day of next year observed on Dec 31 of this one.
    if let Some(d) = observed(ymd(year + 1, 1, 1))
        && d.year() == year
    {
        v.push(Some(d));
    }
    let mut out: Vec<NaiveDate> = v
        .into_iter()
        .flatten()
        .filter(|d| d.year() == year)
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Calendar {
    /// Resolves `cfg` for the years `from..=to`.
    pub fn new(cfg: &CalendarConfig, from: NaiveDate, to: NaiveDate) -> Self {
        let mut holidays: BTreeSet<NaiveDate> = cfg.extra_holidays.iter().copied().collect();
        // One year of margin each side: the first/last business day of a month near a year end looks across it.
        for y in from.year() - 1..=to.year() + 1 {
            match cfg.rules {
                HolidayRules::None => {}
                HolidayRules::Us => holidays.extend(us_business_holidays(y)),
                HolidayRules::UsFederal => holidays.extend(us_federal_holidays(y)),
            }
        }
        Self { holidays }
    }

    pub fn is_holiday(&self, d: NaiveDate) -> bool {
        self.holidays.contains(&d)
    }

    pub fn is_business_day(&self, d: NaiveDate) -> bool {
        d.weekday().num_days_from_monday() < 5 && !self.is_holiday(d)
    }

    /// The class of `d`. A holiday is never a business day, so the classes do not overlap.
    pub fn class(&self, d: NaiveDate) -> DayClass {
        if self.is_holiday(d) {
            return DayClass::Holiday;
        }
        if !self.is_business_day(d) {
            return DayClass::Ordinary;
        }
        if self.no_business_day_within_month(d, |n| n.succ_opt()) {
            return DayClass::LastBusinessDay;
        }
        if self.no_business_day_within_month(d, |p| p.pred_opt()) {
            return DayClass::FirstBusinessDay;
        }
        DayClass::Ordinary
    }

    /// Whether no business day of `d`'s month lies beyond `d` in the direction `step` walks (forward with
    /// `succ_opt`: `d` is the month's last business day; backward with `pred_opt`: its first). One walk for
    /// both ends, so the two classes cannot drift apart.
    fn no_business_day_within_month(
        &self,
        d: NaiveDate,
        step: impl Fn(NaiveDate) -> Option<NaiveDate>,
    ) -> bool {
        let month = d.month();
        let mut next = step(d);
        while let Some(n) = next
            && n.month() == month
        {
            if self.is_business_day(n) {
                break;
            }
            next = step(n);
        }
        next.is_none_or(|n| n.month() != month)
    }

    /// Classes of `n` consecutive days from `start`, in one pass (equal to calling [`Calendar::class`] per
    /// day, which a test checks): each month's first and last business days are found once.
    pub fn classes(&self, start: NaiveDate, n: usize) -> Vec<DayClass> {
        let mut out = vec![DayClass::Ordinary; n];
        if n == 0 {
            return out;
        }
        // Extend to whole months so the month boundaries are known at both ends.
        let Some(first) = start.with_day(1) else {
            return out;
        };
        let Some(last) = start.checked_add_days(Days::new(n as u64 - 1)) else {
            return out;
        };
        let mut d = first;
        let mut month: Vec<NaiveDate> = Vec::with_capacity(31);
        let index = |x: NaiveDate| -> Option<usize> {
            let o = (x - start).num_days();
            (o >= 0 && (o as usize) < n).then_some(o as usize)
        };
        while d <= last || d.month() == last.month() && d.year() == last.year() {
            month.clear();
            let (y, m) = (d.year(), d.month());
            while d.year() == y && d.month() == m {
                if self.is_holiday(d) {
                    if let Some(i) = index(d) {
                        out[i] = DayClass::Holiday;
                    }
                } else if self.is_business_day(d) {
                    month.push(d);
                }
                match d.succ_opt() {
                    Some(next) => d = next,
                    None => return out,
                }
            }
            if let Some(i) = month.first().and_then(|x| index(*x)) {
                out[i] = DayClass::FirstBusinessDay;
            }
            // The last wins when a month has a single business day, as in `class`.
            if let Some(i) = month.last().and_then(|x| index(*x)) {
                out[i] = DayClass::LastBusinessDay;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid date")
    }

    #[test]
    fn us_holidays_2025_are_the_observed_federal_days() {
        let h = us_federal_holidays(2025);
        assert_eq!(
            h,
            vec![
                d(2025, 1, 1),
                d(2025, 1, 20),
                d(2025, 2, 17),
                d(2025, 5, 26),
                d(2025, 6, 19),
                d(2025, 7, 4),
                d(2025, 9, 1),
                d(2025, 10, 13),
                d(2025, 11, 11),
                d(2025, 11, 27),
                d(2025, 12, 25),
            ]
        );
        // 2026-07-04 is a Saturday: observed Friday 3rd.
        assert!(us_federal_holidays(2026).contains(&d(2026, 7, 3)));
        let business = us_business_holidays(2024);
        assert!(
            business.contains(&d(2024, 11, 29)),
            "Friday after Thanksgiving"
        );
        assert!(!business.contains(&d(2024, 10, 14)), "no Columbus Day");
        assert!(!business.contains(&d(2024, 11, 11)), "no Veterans Day");
    }

    #[test]
    fn first_and_last_business_days_skip_weekends_and_holidays() {
        let cal = Calendar::new(&CalendarConfig::default(), d(2024, 1, 1), d(2025, 12, 31));
        // November 2024: Thanksgiving 28th, Friday 29th off -> Wednesday 27th closes the month.
        assert_eq!(cal.class(d(2024, 11, 27)), DayClass::LastBusinessDay);
        // May 2025: 31st is a Saturday -> Friday 30th is the last business day.
        assert_eq!(cal.class(d(2025, 5, 30)), DayClass::LastBusinessDay);
        assert_eq!(cal.class(d(2025, 5, 29)), DayClass::Ordinary);
        // January 2025: the 1st is a holiday -> Thursday 2nd is the first business day.
        assert_eq!(cal.class(d(2025, 1, 1)), DayClass::Holiday);
        assert_eq!(cal.class(d(2025, 1, 2)), DayClass::FirstBusinessDay);
        // December 2025: 31st is a Wednesday.
        assert_eq!(cal.class(d(2025, 12, 31)), DayClass::LastBusinessDay);
        let none = Calendar::new(
            &CalendarConfig {
                rules: HolidayRules::None,
                extra_holidays: vec![d(2025, 5, 30)],
            },
            d(2025, 1, 1),
            d(2025, 12, 31),
        );
        assert_eq!(none.class(d(2025, 5, 29)), DayClass::LastBusinessDay);
        assert_eq!(none.class(d(2025, 1, 1)), DayClass::FirstBusinessDay);
    }

    #[test]
    fn classes_in_one_pass_equal_class_per_day() {
        for (cfg, start, n) in [
            (CalendarConfig::default(), d(2023, 12, 17), 800),
            (CalendarConfig::default(), d(2024, 11, 29), 1),
            (
                CalendarConfig {
                    rules: HolidayRules::UsFederal,
                    extra_holidays: vec![d(2024, 3, 29)],
                },
                d(2024, 3, 31),
                400,
            ),
        ] {
            let cal = Calendar::new(&cfg, start, start + Days::new(n as u64));
            let fast = cal.classes(start, n);
            let slow: Vec<DayClass> = (0..n)
                .map(|i| cal.class(start + Days::new(i as u64)))
                .collect();
            assert_eq!(fast, slow, "{start} + {n}");
        }
    }
}
