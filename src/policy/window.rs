//! Rule windows: a 6-field cron in an IANA zone opens a window that stays
//! open for a fixed elapsed duration.
//!
//! The cron is matched against local wall-clock time. DST is resolved so that
//! an opening never fires twice and never vanishes:
//! - a wall-clock time skipped by a spring-forward gap (02:30 on the last
//!   Sunday of March in Europe/London) opens at the first instant after the
//!   gap (03:00 local, the transition itself);
//! - a wall-clock time repeated by a fall-back fold opens once, at its first
//!   occurrence.
//!
//! The duration is elapsed time, so a 2 h window across a DST change closes
//! 2 real hours after it opened. Every search is bounded by
//! [`SEARCH_HORIZON`]: a cron that never fires within it has no next opening.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// How far ahead openings are searched for (a little over four years, so a
/// 29 February cron still fires).
pub const SEARCH_HORIZON: chrono::Duration = chrono::Duration::days(1500);

/// Bound on DST corrections inside one search (there are at most a few per year).
const MAX_DST_STEPS: usize = 64;

/// A compiled `[[rule.window]]`.
#[derive(Debug)]
pub struct Window {
    /// The cron expression as written.
    pub cron_text: String,
    cron: Cron,
    /// How long the window stays open after each opening (elapsed time, > 0).
    pub duration: Duration,
    /// The zone the cron is read in.
    pub timezone: Tz,
    /// The last answer of [`Window::current_or_next_opening`]: evaluating
    /// a fleet asks it for "now" (or instants just after) once per call,
    /// and one cron search costs microseconds.
    last_opening: Mutex<Option<OpeningMemo>>,
}

/// `current_or_next_opening(asked) == opening`; the same answer holds for
/// every instant in `[asked, opening + duration)`.
#[derive(Debug, Clone, Copy)]
struct OpeningMemo {
    asked: DateTime<Utc>,
    opening: DateTime<Utc>,
}

impl Clone for Window {
    fn clone(&self) -> Self {
        Self::new(
            &self.cron_text,
            self.cron.clone(),
            self.duration,
            self.timezone,
        )
    }
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronParseError(pub String);

/// Parses a 6-field cron (`sec min hour day-of-month month day-of-week`);
/// day-of-month and day-of-week OR when both are restricted.
pub fn parse_cron(text: &str) -> Result<Cron, CronParseError> {
    let fields = text.split_whitespace().count();
    if fields != 6 {
        return Err(CronParseError(format!(
            "expected 6 fields (sec min hour day-of-month month day-of-week), found {fields}"
        )));
    }
    // croner ORs day-of-month and day-of-week unless told otherwise (Vixie).
    Cron::new(text)
        .with_seconds_required()
        .parse()
        .map_err(|err| CronParseError(err.to_string()))
}

impl Window {
    /// Builds a window from its parsed parts.
    pub fn new(cron_text: &str, cron: Cron, duration: Duration, timezone: Tz) -> Self {
        Self {
            cron_text: cron_text.to_owned(),
            cron,
            duration,
            timezone,
            last_opening: Mutex::new(None),
        }
    }

    /// Parses and builds a window (for tests and tools; `config` validates with positions).
    pub fn parse(
        cron_text: &str,
        duration: Duration,
        timezone: Tz,
    ) -> Result<Self, CronParseError> {
        Ok(Self::new(
            cron_text,
            parse_cron(cron_text)?,
            duration,
            timezone,
        ))
    }

    fn duration_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.duration).unwrap_or(SEARCH_HORIZON)
    }

    /// The first opening at or after `at` (`inclusive`) or strictly after it,
    /// within [`SEARCH_HORIZON`].
    pub fn next_opening(&self, at: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        let horizon = at.checked_add_signed(SEARCH_HORIZON)?;
        let tz = self.timezone;
        // Search in wall-clock time: croner is given naive local times
        // (dressed as UTC, which has no DST), and this function resolves
        // gaps and folds itself.
        let mut naive = at.with_timezone(&tz).naive_local();
        let mut naive_inclusive = inclusive;
        if at.nanosecond() != 0 {
            naive = naive.with_nanosecond(0)? + chrono::Duration::seconds(1);
            naive_inclusive = true;
        }
        for _ in 0..MAX_DST_STEPS {
            let found = self.next_naive(naive, naive_inclusive, horizon)?;
            match tz.from_local_datetime(&found) {
                chrono::LocalResult::Single(instant) => {
                    let instant = instant.with_timezone(&Utc);
                    if instant > at || (inclusive && instant == at) {
                        return (instant <= horizon).then_some(instant);
                    }
                    // `at` lies after a fold and this time was before it.
                    naive = found;
                    naive_inclusive = false;
                }
                chrono::LocalResult::Ambiguous(first, second) => {
                    let first = first.with_timezone(&Utc);
                    if first > at || (inclusive && first == at) {
                        return (first <= horizon).then_some(first);
                    }
                    // Its first occurrence has passed: it fired already and
                    // must not fire again. Skip past the end of the fold.
                    let second = second.with_timezone(&Utc);
                    let transition = transition_between(tz, first, second);
                    // The repeated wall-clock range ends at the old offset's
                    // reading of the transition instant.
                    let old_offset = tz.offset_from_utc_datetime(&first.naive_utc()).fix();
                    naive = transition.naive_utc()
                        + chrono::Duration::seconds(old_offset.local_minus_utc().into());
                    naive_inclusive = true;
                }
                chrono::LocalResult::None => {
                    // Spring-forward gap: fire at the first valid instant after it.
                    let before = found - chrono::Duration::hours(26);
                    let after = found + chrono::Duration::hours(26);
                    let lo = tz
                        .from_local_datetime(&before)
                        .earliest()?
                        .with_timezone(&Utc);
                    let hi = tz.from_local_datetime(&after).latest()?.with_timezone(&Utc);
                    let guess = gap_end(tz, found, lo, hi);
                    if guess > at || (inclusive && guess == at) {
                        return (guess <= horizon).then_some(guess);
                    }
                    naive = found;
                    naive_inclusive = false;
                }
            }
        }
        None
    }

    /// The first opening strictly after `at`.
    pub fn next_opening_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_opening(at, false)
    }

    fn next_naive(
        &self,
        from: NaiveDateTime,
        inclusive: bool,
        horizon: DateTime<Utc>,
    ) -> Option<NaiveDateTime> {
        let start = Utc.from_utc_datetime(&from);
        let found = self.cron.find_next_occurrence(&start, inclusive).ok()?;
        // Allow a day of slack for the zone offset between naive and real time.
        (found <= horizon + chrono::Duration::days(1)).then(|| found.naive_utc())
    }

    /// The open interval `[start, end)` that contains `at`, if the window is open then.
    pub fn open_interval_containing(
        &self,
        at: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let duration = self.duration_chrono();
        if duration <= chrono::Duration::zero() {
            return None;
        }
        // The latest opening in (at - duration, at] holds `at`; windows are
        // validated not to overlap, so the first one found there is it.
        let from = at.checked_sub_signed(duration)?;
        let start = self.next_opening(from, false)?;
        (start <= at).then(|| (start, start + duration))
    }

    /// Whether the window is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.open_interval_containing(at).is_some()
    }

    /// The earliest instant at or after `at` when the window is open.
    pub fn next_open_instant(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.current_or_next_opening(at).map(|start| start.max(at))
    }

    /// The start of the opening whose interval holds `at`, else the first
    /// opening after `at`: what [`Window::open_interval_containing`] and then
    /// [`Window::next_opening_after`] say, in one search instead of two.
    ///
    /// Remembers its last answer: for a later instant before that
    /// opening closes the answer is the same (no opening starts between the
    /// asked instant and the remembered one, and openings do not overlap),
    /// so a fleet evaluated at one `now` costs one search per window.
    pub fn current_or_next_opening(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let duration = self.duration_chrono();
        let memo = self.last_opening.lock().ok().and_then(|memo| *memo);
        if let Some(memo) = memo {
            if memo.asked <= at
                && memo
                    .opening
                    .checked_add_signed(duration)
                    .is_some_and(|end| at < end)
            {
                return Some(memo.opening);
            }
        }
        let found = self.search_current_or_next_opening(at, duration);
        if let (Some(opening), Ok(mut memo)) = (found, self.last_opening.lock()) {
            *memo = Some(OpeningMemo { asked: at, opening });
        }
        found
    }

    /// [`Window::current_or_next_opening`] without the memo.
    fn search_current_or_next_opening(
        &self,
        at: DateTime<Utc>,
        duration: chrono::Duration,
    ) -> Option<DateTime<Utc>> {
        if duration > chrono::Duration::zero() {
            // The first opening after `at - duration` holds `at` when it is
            // not later than `at`; when it is later, nothing opened in
            // `(at - duration, at]`, so it is also the first after `at`.
            let found = at
                .checked_sub_signed(duration)
                .and_then(|from| self.next_opening(from, false));
            if found.is_some() {
                return found;
            }
        }
        // Also when the search from `at - duration` hit its horizon.
        self.next_opening(at, false)
    }

    /// The next instant after `at` when the window opens or closes.
    pub fn next_change_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next_open = self.next_opening(at, false);
        let close = self
            .open_interval_containing(at)
            .map(|(_, end)| end)
            .filter(|end| *end > at);
        match (next_open, close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A cheap lower bound on the real time between two consecutive
    /// openings over the next `days` days from `from`, without searching
    /// opening by opening; `None` when fewer than two openings can fall in
    /// that span.
    ///
    /// Every matching day has the same set of matching times of day, so the
    /// smallest gap in local wall-clock time is either between two times of
    /// one day or from the last time of a day to the first of the next
    /// matching day. A clock change moves an opening by at most the size of
    /// the change (a time in a spring-forward gap opens at its end, a
    /// repeated time opens once), so subtracting every change in the span
    /// bounds the real gap from below.
    pub fn period_lower_bound(&self, from: DateTime<Utc>, days: i64) -> Option<chrono::Duration> {
        let pattern = &self.cron.pattern;
        let matching = |limit: u32, test: &dyn Fn(u32) -> bool| -> Vec<i64> {
            (0..limit).filter(|v| test(*v)).map(i64::from).collect()
        };
        let seconds = matching(60, &|v| pattern.second_match(v).unwrap_or(false));
        let minutes = matching(60, &|v| pattern.minute_match(v).unwrap_or(false));
        let hours = matching(24, &|v| pattern.hour_match(v).unwrap_or(false));
        let (s0, s1) = (*seconds.first()?, *seconds.last()?);
        let (m0, m1) = (*minutes.first()?, *minutes.last()?);
        let (h0, h1) = (*hours.first()?, *hours.last()?);
        let min_step = |values: &[i64]| values.windows(2).map(|w| w[1] - w[0]).min();
        // Within one day: the next second, the next minute, the next hour.
        let within_day = [
            min_step(&seconds),
            min_step(&minutes).map(|m| 60 * m + s0 - s1),
            min_step(&hours).map(|h| 3600 * h + 60 * (m0 - m1) + s0 - s1),
        ]
        .into_iter()
        .flatten()
        .min();
        let first_time = 3600 * h0 + 60 * m0 + s0;
        let last_time = 3600 * h1 + 60 * m1 + s1;
        // Across days: consecutive matching local dates, with a day of
        // margin on each side of the span.
        let start = from.with_timezone(&self.timezone).date_naive() - chrono::Duration::days(1);
        let mut previous_day: Option<i64> = None;
        let mut across_days: Option<i64> = None;
        for offset in 0..=days.saturating_add(2) {
            let Some(date) = start.checked_add_signed(chrono::Duration::days(offset)) else {
                break;
            };
            let matches = pattern.month_match(date.month()).unwrap_or(false)
                && pattern
                    .day_match(date.year(), date.month(), date.day())
                    .unwrap_or(false);
            if matches {
                if let Some(previous) = previous_day {
                    let gap = 86_400 * (offset - previous) + first_time - last_time;
                    across_days = Some(across_days.map_or(gap, |g| g.min(gap)));
                }
                previous_day = Some(offset);
            }
        }
        previous_day?;
        let naive = match (within_day, across_days) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        // Every change of UTC offset in the span, summed: at least what any
        // one gap can lose.
        let offset_at = |t: DateTime<Utc>| {
            i64::from(
                self.timezone
                    .offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        };
        // A second more per change: an opening in a spring-forward gap is
        // placed at the change found to within a second.
        let mut shifts = 0;
        let mut previous = offset_at(from - chrono::Duration::days(1));
        for day in 0..=days.saturating_add(2) {
            let Some(at) = from.checked_add_signed(chrono::Duration::days(day)) else {
                break;
            };
            let current = offset_at(at);
            if current != previous {
                shifts += (current - previous).abs() + 1;
            }
            previous = current;
        }
        Some(chrono::Duration::seconds(naive - shifts))
    }

    /// The smallest gap between consecutive openings over the next `days`
    /// days from `from` (bounded to 10,000 openings); `None` with fewer than two.
    pub fn smallest_period(&self, from: DateTime<Utc>, days: i64) -> Option<chrono::Duration> {
        let end = from + chrono::Duration::days(days);
        let mut previous = self.next_opening(from, true)?;
        let mut smallest: Option<chrono::Duration> = None;
        for _ in 0..10_000 {
            let Some(next) = self.next_opening(previous, false) else {
                break;
            };
            if next > end {
                break;
            }
            let gap = next - previous;
            smallest = Some(smallest.map_or(gap, |s| s.min(gap)));
            // A gap this small already proves the window too long; no need to go on.
            if gap <= chrono::Duration::seconds(1) {
                break;
            }
            previous = next;
        }
        smallest
    }
}

/// The first instant in `(lo, hi]` whose UTC offset differs from `lo`'s
/// (binary search to the second); `hi` when none does.
fn transition_between(tz: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> DateTime<Utc> {
    let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let base = offset_at(lo);
    let (mut lo, mut hi) = (lo, hi);
    while hi - lo > chrono::Duration::seconds(1) {
        let mid = lo + (hi - lo) / 2;
        if offset_at(mid) == base {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The first valid instant after the DST gap that swallowed wall-clock `naive`,
/// searched between `lo` and `hi`.
fn gap_end(tz: Tz, naive: NaiveDateTime, lo: DateTime<Utc>, hi: DateTime<Utc>) -> DateTime<Utc> {
    // The gap is the last offset change before the first instant whose local
    // reading is past `naive`.
    let (mut a, mut b) = (lo, hi);
    while b - a > chrono::Duration::seconds(1) {
        let mid = a + (b - a) / 2;
        if mid.with_timezone(&tz).naive_local() < naive {
            a = mid;
        } else {
            b = mid;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::London, UTC};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(cron: &str, minutes: u64, tz: Tz) -> Window {
        Window::parse(cron, Duration::from_secs(minutes * 60), tz).unwrap()
    }

    #[test]
    fn six_fields_required() {
        assert!(parse_cron("0 2 * * *").is_err());
        assert!(parse_cron("0 0 2 * * Sun").is_ok());
        assert!(parse_cron("0 0 2 * * 7").is_ok());
        assert!(parse_cron("0 0 25 * * *").is_err());
        assert!(parse_cron("nonsense").is_err());
    }

    #[test]
    fn sunday_is_0_7_or_sun() {
        // 2026-03-01 is a Sunday.
        for dow in ["0", "7", "Sun", "SUN"] {
            let w = window(&format!("0 0 2 * * {dow}"), 60, UTC);
            assert_eq!(
                w.next_opening_after(utc("2026-02-27T00:00:00Z")),
                Some(utc("2026-03-01T02:00:00Z")),
                "{dow}"
            );
        }
    }

    #[test]
    fn dom_and_dow_or_when_both_restricted() {
        // The 15th, or any Monday. 2026-06-01 is a Monday; 2026-06-02 a Tuesday.
        let w = window("0 0 0 15 * Mon", 60, UTC);
        assert_eq!(
            w.next_opening_after(utc("2026-06-01T12:00:00Z")),
            Some(utc("2026-06-08T00:00:00Z"))
        );
        assert_eq!(
            w.next_opening_after(utc("2026-06-09T00:00:00Z")),
            Some(utc("2026-06-15T00:00:00Z"))
        );
    }

    /// [`Window::current_or_next_opening`] as its doc defines it.
    fn two_searches(w: &Window, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match w.open_interval_containing(at) {
            Some((start, _)) => Some(start),
            None => w.next_opening_after(at),
        }
    }

    proptest::proptest! {
        #[test]
        fn one_search_agrees_with_two(
            window_index in 0usize..6,
            // Across 2026, DST changes included.
            offset_s in 0i64..366 * 86_400,
        ) {
            let windows = [
                window("0 0 2 * * *", 60, London),
                window("0 30 2 * * *", 90, New_York),
                window("0 */5 * * * *", 5, UTC),
                window("0 0 1 * * Sun", 120, London),
                window("0 0 0 29 2 *", 60, UTC),
                window("0 30 1 * * *", 30, New_York),
            ];
            let w = &windows[window_index];
            let at = utc("2026-01-01T00:00:00Z") + chrono::Duration::seconds(offset_s);
            proptest::prop_assert_eq!(w.current_or_next_opening(at), two_searches(w, at));
            let open = w.is_open(at);
            let expected = if open { Some(at) } else { w.next_opening_after(at) };
            proptest::prop_assert_eq!(w.next_open_instant(at), expected);
        }
    }

    proptest::proptest! {
        /// Asked again and again, in any order (as when a fleet is
        /// evaluated), the remembered answer is always the searched one.
        #[test]
        fn remembered_answers_agree_with_searches(
            window_index in 0usize..4,
            start_s in 0i64..366 * 86_400,
            steps in proptest::collection::vec(-7_200i64..7_200, 1..40),
        ) {
            let windows = [
                window("0 0 2 * * *", 60, London),
                window("0 30 2 * * *", 90, New_York),
                window("0 */5 * * * *", 5, UTC),
                window("0 30 1 * * *", 30, New_York),
            ];
            let w = &windows[window_index];
            let mut at = utc("2026-01-01T00:00:00Z") + chrono::Duration::seconds(start_s);
            for step in steps {
                at += chrono::Duration::seconds(step);
                proptest::prop_assert_eq!(w.current_or_next_opening(at), two_searches(w, at));
            }
        }
    }

    #[test]
    fn open_interval_and_changes() {
        let w = window("0 0 2 * * *", 120, UTC);
        let inside = utc("2026-06-01T03:00:00Z");
        assert_eq!(
            w.open_interval_containing(inside),
            Some((utc("2026-06-01T02:00:00Z"), utc("2026-06-01T04:00:00Z")))
        );
        assert!(w.is_open(utc("2026-06-01T02:00:00Z")));
        assert!(!w.is_open(utc("2026-06-01T04:00:00Z")));
        assert!(!w.is_open(utc("2026-06-01T01:59:59Z")));
        assert_eq!(
            w.next_change_after(inside),
            Some(utc("2026-06-01T04:00:00Z"))
        );
        assert_eq!(
            w.next_change_after(utc("2026-06-01T04:00:00Z")),
            Some(utc("2026-06-02T02:00:00Z"))
        );
        assert_eq!(w.next_open_instant(inside), Some(inside));
        assert_eq!(
            w.next_open_instant(utc("2026-06-01T05:00:00Z")),
            Some(utc("2026-06-02T02:00:00Z"))
        );
    }

    #[test]
    fn never_firing_cron_has_no_opening() {
        let w = window("0 0 0 30 2 *", 60, UTC);
        assert_eq!(w.next_opening_after(utc("2026-01-01T00:00:00Z")), None);
        assert!(!w.is_open(utc("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn london_spring_forward_fires_once_after_the_gap() {
        // 2026-03-29: 01:00 GMT jumps to 02:00 BST; 01:30 local does not exist.
        let w = window("0 30 1 * * *", 30, London);
        let day_before = w.next_opening_after(utc("2026-03-28T00:00:00Z")).unwrap();
        assert_eq!(day_before, utc("2026-03-28T01:30:00Z"));
        let gap_day = w.next_opening_after(day_before).unwrap();
        // First instant after the gap: 02:00 BST = 01:00 UTC.
        assert_eq!(gap_day, utc("2026-03-29T01:00:00Z"));
        let next = w.next_opening_after(gap_day).unwrap();
        assert_eq!(next, utc("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn new_york_spring_forward_0230_fires_at_0300() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let w = window("0 30 2 * * *", 60, New_York);
        let first = w.next_opening_after(utc("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-03-08T07:00:00Z")); // 03:00 EDT
        let next = w.next_opening_after(first).unwrap();
        assert_eq!(next, utc("2026-03-09T06:30:00Z")); // 02:30 EDT
        assert!(w.is_open(utc("2026-03-08T07:30:00Z")));
    }

    #[test]
    fn london_fall_back_fires_once_at_first_occurrence() {
        // 2026-10-25: 02:00 BST falls back to 01:00 GMT; 01:30 happens twice.
        let w = window("0 30 1 * * *", 30, London);
        let first = w.next_opening_after(utc("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T00:30:00Z")); // 01:30 BST
        let next = w.next_opening_after(first).unwrap();
        assert_eq!(next, utc("2026-10-26T01:30:00Z")); // not 01:30 GMT the same day
                                                       // Asked from inside the repeated hour, it still does not fire again.
        let inside_second_pass = utc("2026-10-25T01:10:00Z"); // 01:10 GMT
        assert_eq!(
            w.next_opening_after(inside_second_pass),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn new_york_fall_back_every_minute_keeps_going_after_the_fold() {
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST.
        let w = window("0 * * * * *", 1, New_York);
        // 01:10 EST (second pass) = 06:10 UTC: next opening is 01:11 EST... which
        // is a repeat of 01:11 EDT and has fired; the first new wall time is 02:00 EST.
        let next = w.next_opening_after(utc("2026-11-01T06:10:00Z")).unwrap();
        assert_eq!(next, utc("2026-11-01T07:00:00Z"));
    }

    #[test]
    fn smallest_period_finds_the_tightest_gap() {
        let w = window("0 0 2,3 * * *", 30, UTC);
        assert_eq!(
            w.smallest_period(utc("2026-01-01T00:00:00Z"), 10),
            Some(chrono::Duration::hours(1))
        );
    }

    /// The cheap bound never exceeds the searched smallest gap, across DST
    /// gaps and folds, half-hour shifts, day patterns and sub-day steps.
    #[test]
    fn period_lower_bound_never_exceeds_the_smallest_period() {
        let zones: [Tz; 5] = [
            UTC,
            London,
            New_York,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Antarctica::Troll,
        ];
        let crons = [
            "0 0 2 * * *",
            "0 30 1 * * *",
            "0 30 2 * * *",
            "0 0 1,2 * * *",
            "0 0 2 1,2 * *",
            "0 0 23 * * Sat",
            "0 0 0 * * Sun,Mon",
            "0 0 0 1 * *",
            "0 0 0 29 2 *",
            "0 0 0 31 * *",
            "0 */20 * * * *",
            "*/7 * * * * *",
            "0 0 */5 * * *",
            "30 59 23 L * *",
            "0 0 2 1 1,7 *",
        ];
        let starts = [
            "2026-01-01T00:00:00Z",
            "2026-03-07T12:00:00Z",
            "2026-03-28T23:00:00Z",
            "2026-10-24T12:00:00Z",
            "2026-09-30T00:00:00Z",
        ];
        for tz in zones {
            for cron in crons {
                let w = window(cron, 1, tz);
                for start in starts {
                    let from = utc(start);
                    let exact = w.smallest_period(from, 60);
                    let bound = w.period_lower_bound(from, 60);
                    if let Some(exact) = exact {
                        let bound =
                            bound.unwrap_or_else(|| panic!("{cron} {tz} {start}: no bound"));
                        assert!(
                            bound <= exact,
                            "{cron} in {tz} from {start}: bound {bound} > smallest {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn period_lower_bound_is_tight_without_clock_changes() {
        let from = utc("2026-01-01T00:00:00Z");
        let bound = |cron: &str| window(cron, 1, UTC).period_lower_bound(from, 400);
        assert_eq!(bound("0 0 2 * * *"), Some(chrono::Duration::hours(24)));
        assert_eq!(bound("0 0 2,3 * * *"), Some(chrono::Duration::hours(1)));
        assert_eq!(bound("0 0 23 * * Sat"), Some(chrono::Duration::days(7)));
        assert_eq!(bound("0 0 2 1,2 * *"), Some(chrono::Duration::days(1)));
        assert_eq!(bound("0 0 0 30 2 *"), None);
        // London: two clock changes a year, an hour each.
        let london = window("0 0 2 * * *", 1, London).period_lower_bound(from, 400);
        assert_eq!(london, Some(chrono::Duration::seconds(22 * 3600 - 2)));
    }
}
