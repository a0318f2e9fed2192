//! Reboot window math, in the window's time zone: a window opens at `start` on each of
//! its `days` and closes at `end` (the next day when `end` is before `start`, as nixpkgs'
//! `rebootWindow` spans midnight). Daylight-saving gaps and folds resolve the way
//! `jiff`'s compatible disambiguation does (a start in a gap moves forward).

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};

use crate::config::Window;

/// One opening of the window: from `open` (inclusive) to `close` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub open: Timestamp,
    pub close: Timestamp,
}

/// The opening that contains `now`, or the next one. `None` only if the calendar ends.
pub fn current_or_next(window: &Window, now: Timestamp) -> Option<Opening> {
    let today = now.to_zoned(window.timezone.clone()).date();
    // Yesterday's opening may span midnight into today; a week and a day covers every day.
    (-1..=8)
        .filter_map(|offset: i64| today.checked_add(offset.days()).ok())
        .filter_map(|date| opening(window, date))
        .find(|o| o.close > now)
}

/// Whether `now` is inside an opening.
pub fn contains(window: &Window, now: Timestamp) -> bool {
    current_or_next(window, now).is_some_and(|o| o.open <= now)
}

fn opening(window: &Window, date: Date) -> Option<Opening> {
    if !window.days.contains(&date.weekday()) {
        return None;
    }
    let tz = window.timezone.clone();
    let open = date.to_datetime(window.start).to_zoned(tz.clone()).ok()?;
    let end_date = if window.end > window.start {
        date
    } else {
        date.checked_add(1.day()).ok()?
    };
    let close = end_date.to_datetime(window.end).to_zoned(tz).ok()?;
    Some(Opening {
        open: open.timestamp(),
        close: close.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{Time, Weekday};
    use jiff::tz::TimeZone;

    fn window(days: &[Weekday], start: (i8, i8), end: (i8, i8), tz: &str) -> Window {
        Window {
            days: days.to_vec(),
            start: Time::new(start.0, start.1, 0, 0).unwrap(),
            end: Time::new(end.0, end.1, 0, 0).unwrap(),
            timezone_name: tz.into(),
            timezone: TimeZone::get(tz).unwrap(),
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const EVERY: &[Weekday] = &crate::config::reboot::ALL_DAYS;

    #[test]
    fn a_plain_window_in_utc() {
        let w = window(EVERY, (2, 0), (4, 0), "UTC");
        assert!(!contains(&w, ts("2026-11-25T01:59:59Z")));
        assert!(contains(&w, ts("2026-11-25T02:00:00Z")));
        assert!(contains(&w, ts("2026-11-25T03:59:59Z")));
        assert!(!contains(&w, ts("2026-11-25T04:00:00Z")));
        let next = current_or_next(&w, ts("2026-11-25T05:00:00Z")).unwrap();
        assert_eq!(next.open, ts("2026-11-26T02:00:00Z"));
        assert_eq!(next.close, ts("2026-11-26T04:00:00Z"));
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_opens() {
        // Saturdays 23:00 to 02:00: Sunday 01:00 is inside, Saturday 01:00 is not.
        let w = window(&[Weekday::Saturday], (23, 0), (2, 0), "UTC");
        // 2026-11-28 is a Saturday.
        assert!(contains(&w, ts("2026-11-29T01:00:00Z")));
        assert!(!contains(&w, ts("2026-11-28T01:00:00Z")));
        assert!(contains(&w, ts("2026-11-28T23:30:00Z")));
        let next = current_or_next(&w, ts("2026-11-29T02:00:00Z")).unwrap();
        assert_eq!(next.open, ts("2026-12-05T23:00:00Z"));
    }

    #[test]
    fn the_time_zone_decides_the_day_and_the_hour() {
        // Mondays 02:00-03:00 in Berlin (UTC+1 in winter): Sunday 01:30 UTC is inside.
        let w = window(&[Weekday::Monday], (2, 0), (3, 0), "Europe/Berlin");
        assert!(contains(&w, ts("2026-11-30T01:30:00Z")));
        assert!(!contains(&w, ts("2026-11-30T02:30:00Z")));
        // Summer: UTC+2.
        assert!(contains(&w, ts("2026-06-01T00:30:00Z")));
        // New York, UTC-5: Monday 02:00 local is 07:00 UTC.
        let ny = window(&[Weekday::Monday], (2, 0), (3, 0), "America/New_York");
        assert_eq!(
            current_or_next(&ny, ts("2026-11-25T00:00:00Z"))
                .unwrap()
                .open,
            ts("2026-11-30T07:00:00Z")
        );
    }

    #[test]
    fn a_start_in_a_daylight_saving_gap_moves_forward_not_away() {
        // Berlin skips 02:00-03:00 on 2026-03-29 (a Sunday).
        let w = window(&[Weekday::Sunday], (2, 30), (4, 0), "Europe/Berlin");
        let o = current_or_next(&w, ts("2026-03-28T12:00:00Z")).unwrap();
        // 03:30 CEST = 01:30 UTC; closes at 04:00 CEST = 02:00 UTC.
        assert_eq!(o.open, ts("2026-03-29T01:30:00Z"));
        assert_eq!(o.close, ts("2026-03-29T02:00:00Z"));
    }
}
