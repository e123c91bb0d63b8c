//! Civil time in Vietnam. Stored times are UTC; dates that the law counts (due dates, days
//! overdue) are Asia/Ho_Chi_Minh dates. Vietnam keeps UTC+07:00 all year (no daylight saving
//! since 1975), so a fixed offset is exact for every date paygate handles.

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// UTC+07:00, Asia/Ho_Chi_Minh.
pub fn vn_offset() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("valid offset")
}

/// The Vietnamese calendar date at instant `at`.
pub fn vn_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&vn_offset()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vietnamese_date_turns_at_17_utc() {
        let before: DateTime<Utc> = "2026-11-26T16:59:59Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-11-26T17:00:00Z".parse().unwrap();
        assert_eq!(vn_date(before), NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        assert_eq!(vn_date(after), NaiveDate::from_ymd_opt(2026, 11, 27).unwrap());
    }
}
