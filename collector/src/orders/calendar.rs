//! When a warehouse can ship: its cutoff, business days and holidays, read in the
//! warehouse's own time zone (jiff), never in the collector's or the customer's.
//!
//! An order placed at 15:30 UTC is 16:30 in Amsterdam (past a 15:00 cutoff) and 09:30 in
//! Chicago (well before it): the same instant ships today from one and tomorrow from the
//! other. Getting that wrong by a time zone is how "same-day" promises break.

use jiff::civil::Date;
use jiff::Timestamp;

use super::config::Site;

/// Whole local days from the order's local date to the day `site` ships it (0 = today).
/// `None` when the calendar has no shipping day in the next year.
pub fn days_to_ship(site: &Site, at: Timestamp) -> Option<u32> {
    let local = at.to_zoned(site.tz.clone());
    let today = local.date();
    let before_cutoff = site.cutoff.is_none_or(|c| local.time() < c);
    let mut day = today;
    for offset in 0..=366u32 {
        let ships = site.business_days.contains(&day.weekday()) && !site.holidays.contains(&day);
        if ships && (offset > 0 || before_cutoff) {
            return Some(offset);
        }
        day = day.tomorrow().ok()?;
    }
    None
}

/// The warehouse's local date at `at` (daily capacity is counted per local day).
pub fn local_day(site: &Site, at: Timestamp) -> Date {
    at.to_zoned(site.tz.clone()).date()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::config::WarehouseRouting;

    fn site(tz: &str, cutoff: &str, holidays: &[&str]) -> Site {
        Site::parse(
            "t",
            &WarehouseRouting {
                time_zone: tz.into(),
                cutoff: Some(cutoff.into()),
                holidays: holidays.iter().map(|h| h.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn the_same_instant_is_past_cutoff_in_amsterdam_and_before_it_in_chicago() {
        // Friday 2026-11-27 15:30 UTC: 16:30 in Amsterdam, 09:30 in Chicago.
        let at: Timestamp = "2026-11-27T15:30:00Z".parse().unwrap();
        // Past cutoff on a Friday: next business day is Monday, three days on.
        assert_eq!(
            days_to_ship(&site("Europe/Amsterdam", "15:00", &[]), at),
            Some(3)
        );
        assert_eq!(
            days_to_ship(&site("America/Chicago", "15:00", &[]), at),
            Some(0)
        );
    }

    #[test]
    fn a_late_utc_evening_is_already_tomorrow_in_singapore() {
        // Thursday 20:00 UTC is Friday 04:00 in Singapore: before its cutoff, ships "today".
        let at: Timestamp = "2026-11-26T20:00:00Z".parse().unwrap();
        let sin = site("Asia/Singapore", "14:00", &[]);
        assert_eq!(days_to_ship(&sin, at), Some(0));
        assert_eq!(local_day(&sin, at), jiff::civil::date(2026, 11, 27));
    }

    #[test]
    fn holidays_and_weekends_are_skipped() {
        // Thursday 2026-12-24 after cutoff; 25th is a holiday, 26-27 weekend: ships Monday 28th.
        let at: Timestamp = "2026-12-24T17:00:00Z".parse().unwrap();
        assert_eq!(
            days_to_ship(&site("Europe/Amsterdam", "15:00", &["2026-12-25"]), at),
            Some(4)
        );
    }
}
