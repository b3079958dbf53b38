//! Times as people read them in a feed: `5m ago`, `2h ago`, `3d ago`, and the groups TODAY /
//! YESTERDAY / THIS WEEK / EARLIER (the team-sharing RFC's feed; SPEC.md §11 share times).
//!
//! Days are calendar days in the viewer's time zone, given as an offset from UTC so the result
//! is the same on every machine in tests ([`local_offset_secs`] is the viewer's). THIS WEEK is
//! the five calendar days before yesterday (so the groups are never empty on a Monday).

use chrono::{Offset, TimeZone, Utc};
use serde::Serialize;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A feed group, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Today,
    Yesterday,
    ThisWeek,
    Earlier,
}

impl Group {
    pub const ALL: [Group; 4] = [
        Group::Today,
        Group::Yesterday,
        Group::ThisWeek,
        Group::Earlier,
    ];

    /// `TODAY`, `YESTERDAY`, `THIS WEEK`, `EARLIER`.
    pub fn label(self) -> &'static str {
        match self {
            Group::Today => "TODAY",
            Group::Yesterday => "YESTERDAY",
            Group::ThisWeek => "THIS WEEK",
            Group::Earlier => "EARLIER",
        }
    }
}

/// The offset of the viewer's time zone from UTC now, in seconds (0 when unknown).
pub fn local_offset_secs() -> i32 {
    chrono::Local
        .offset_from_utc_datetime(&Utc::now().naive_utc())
        .fix()
        .local_minus_utc()
}

/// The calendar day number of `ms` at `offset_secs` from UTC.
fn day_number(ms: i64, offset_secs: i32) -> i64 {
    (ms + i64::from(offset_secs) * 1000).div_euclid(DAY)
}

/// Which group a time falls in, seen at `now_ms` (a time after now counts as today).
pub fn group_of(ms: i64, now_ms: i64, offset_secs: i32) -> Group {
    let days = day_number(now_ms, offset_secs) - day_number(ms, offset_secs);
    match days {
        i64::MIN..=0 => Group::Today,
        1 => Group::Yesterday,
        2..=6 => Group::ThisWeek,
        _ => Group::Earlier,
    }
}

/// `just now`, `5m ago`, `2h ago`, `3d ago`, `5w ago`, then the day (`2025-09-18`). A time in
/// the future (another machine's clock) reads `just now`.
pub fn relative(ms: i64, now_ms: i64) -> String {
    let ago = now_ms - ms;
    match ago {
        i64::MIN..MINUTE => "just now".into(),
        MINUTE..HOUR => format!("{}m ago", ago / MINUTE),
        HOUR..DAY => format!("{}h ago", ago / HOUR),
        _ if ago < 14 * DAY => format!("{}d ago", ago / DAY),
        _ if ago < 60 * DAY => format!("{}w ago", ago / (7 * DAY)),
        _ => crate::views::stats::day(ms),
    }
}

/// Splits indices of items (already newest first) into the non-empty groups, in order.
pub fn grouped<T>(
    items: &[T],
    time: impl Fn(&T) -> i64,
    now_ms: i64,
    offset_secs: i32,
) -> Vec<(Group, Vec<usize>)> {
    let mut out: Vec<(Group, Vec<usize>)> = Vec::new();
    let mut by_group: [Vec<usize>; 4] = Default::default();
    for (i, item) in items.iter().enumerate() {
        by_group[group_of(time(item), now_ms, offset_secs) as usize].push(i);
    }
    for (group, members) in Group::ALL.into_iter().zip(by_group) {
        if !members.is_empty() {
            out.push((group, members));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-04T15:00:00Z, a Wednesday.
    const NOW: i64 = 1_772_636_400_000;

    #[test]
    fn relative_times() {
        assert_eq!(relative(NOW + 5 * MINUTE, NOW), "just now");
        assert_eq!(relative(NOW - 30_000, NOW), "just now");
        assert_eq!(relative(NOW - 5 * MINUTE, NOW), "5m ago");
        assert_eq!(relative(NOW - 2 * HOUR - 1, NOW), "2h ago");
        assert_eq!(relative(NOW - 3 * DAY, NOW), "3d ago");
        assert_eq!(relative(NOW - 20 * DAY, NOW), "2w ago");
        assert_eq!(relative(NOW - 90 * DAY, NOW), "2025-12-04");
    }

    #[test]
    fn groups_follow_calendar_days_in_the_viewers_zone() {
        assert_eq!(group_of(NOW - 14 * HOUR, NOW, 0), Group::Today);
        assert_eq!(group_of(NOW - 16 * HOUR, NOW, 0), Group::Yesterday);
        assert_eq!(group_of(NOW - 3 * DAY, NOW, 0), Group::ThisWeek);
        assert_eq!(group_of(NOW - 6 * DAY, NOW, 0), Group::ThisWeek);
        assert_eq!(group_of(NOW - 7 * DAY, NOW, 0), Group::Earlier);
        assert_eq!(group_of(NOW + HOUR, NOW, 0), Group::Today);
        // 4h ago is 11:00 today in UTC, but 23:00 yesterday at UTC-12 (now is 03:00 there).
        assert_eq!(group_of(NOW - 4 * HOUR, NOW, 0), Group::Today);
        assert_eq!(group_of(NOW - 4 * HOUR, NOW, -12 * 3600), Group::Yesterday);
        let times = [NOW, NOW - HOUR, NOW - 2 * DAY, NOW - 30 * DAY];
        let groups = grouped(&times, |t| *t, NOW, 0);
        assert_eq!(
            groups,
            vec![
                (Group::Today, vec![0, 1]),
                (Group::ThisWeek, vec![2]),
                (Group::Earlier, vec![3])
            ]
        );
        assert_eq!(Group::ThisWeek.label(), "THIS WEEK");
    }
}
