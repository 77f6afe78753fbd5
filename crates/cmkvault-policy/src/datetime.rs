//! UTC date-times for the template functions (`dateTimeAdd`, `dateTimeFromEpoch`,
//! `dateTimeToEpoch`, `utcNow`) and the policy ones (`addDays`): ISO 8601 parsing, ISO 8601
//! durations, and .NET-style format strings. No time-zone database: offsets in the input are
//! applied, output is always UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant: seconds since the Unix epoch and a sub-second part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds within the second (0..1e9).
    pub nanos: u32,
}

/// The default output format: `yyyy-MM-ddTHH:mm:ssZ`.
pub const ISO_FORMAT: &str = "yyyy-MM-ddTHH:mm:ssZ";

impl DateTime {
    /// The current time.
    pub fn now() -> DateTime {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        DateTime {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }

    /// From epoch seconds.
    pub fn from_epoch(secs: i64) -> DateTime {
        DateTime { secs, nanos: 0 }
    }

    /// Parses `yyyy-MM-dd`, `yyyy-MM-ddTHH:mm[:ss[.fffffff]]` with an optional `Z` or `±HH:mm`
    /// offset (a space may replace the `T`). A value without an offset is taken as UTC.
    pub fn parse(s: &str) -> Option<DateTime> {
        let s = s.trim();
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Option<i64> {
            let part = s.get(from..from + len)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let year = num(0, 4)?;
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let month = num(5, 2)?;
        let day = num(8, 2)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut secs = days_from_civil(year, month, day) * 86_400;
        let mut nanos = 0u32;
        let mut i = 10;
        if i < b.len() {
            if b[i] != b'T' && b[i] != b't' && b[i] != b' ' {
                return None;
            }
            let hour = num(i + 1, 2)?;
            if b.get(i + 3) != Some(&b':') {
                return None;
            }
            let minute = num(i + 4, 2)?;
            i += 6;
            let mut second = 0;
            if b.get(i) == Some(&b':') {
                second = num(i + 1, 2)?;
                i += 3;
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    let start = i;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    let frac = s.get(start..i)?;
                    if frac.is_empty() {
                        return None;
                    }
                    let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
                    nanos = digits.parse().ok()?;
                }
            }
            if hour > 23 || minute > 59 || second > 60 {
                return None;
            }
            secs += hour * 3600 + minute * 60 + second;
            match b.get(i) {
                None => {}
                Some(b'Z') | Some(b'z') if i + 1 == b.len() => {}
                Some(&sign @ (b'+' | b'-')) => {
                    let oh = num(i + 1, 2)?;
                    let om = match b.get(i + 3) {
                        Some(b':') => num(i + 4, 2)?,
                        Some(_) => num(i + 3, 2)?,
                        None => 0,
                    };
                    let offset = oh * 3600 + om * 60;
                    secs -= if sign == b'+' { offset } else { -offset };
                }
                Some(_) => return None,
            }
        }
        Some(DateTime { secs, nanos })
    }

    /// Adds an ISO 8601 duration (`P1Y2M3DT4H5M6S`, `P2W`, a leading `-` subtracts). Years and
    /// months move the calendar date (clamped to the month's last day).
    pub fn add_duration(self, duration: &str) -> Option<DateTime> {
        let d = Duration::parse(duration)?;
        let sign = if d.negative { -1 } else { 1 };
        let days = self.secs.div_euclid(86_400);
        let time = self.secs.rem_euclid(86_400);
        let (y, m, day) = civil_from_days(days);
        let total_months = y * 12 + (m - 1) + sign * (d.years * 12 + d.months);
        let ny = total_months.div_euclid(12);
        let nm = total_months.rem_euclid(12) + 1;
        let nd = day.min(days_in_month(ny, nm));
        let base = days_from_civil(ny, nm, nd) * 86_400 + time;
        let delta = d.days * 86_400 + d.hours * 3600 + d.minutes * 60 + d.seconds;
        Some(DateTime {
            secs: base.checked_add(sign * delta)?,
            nanos: self.nanos,
        })
    }

    /// Adds whole days.
    pub fn add_days(self, days: i64) -> Option<DateTime> {
        Some(DateTime {
            secs: self.secs.checked_add(days.checked_mul(86_400)?)?,
            nanos: self.nanos,
        })
    }

    /// Formats with a .NET format string: the standard formats `o`, `u`, `s`, `d`, `r` or custom
    /// patterns (`yyyy`, `MM`, `dd`, `HH`, `hh`, `mm`, `ss`, `f`…, `tt`, `K`, `MMM`, `ddd`,
    /// quoted literals, `\` escapes). `None` means [`ISO_FORMAT`].
    pub fn format(&self, fmt: Option<&str>) -> String {
        let fmt = match fmt.unwrap_or(ISO_FORMAT) {
            "o" | "O" => "yyyy-MM-ddTHH:mm:ss.fffffffK",
            "u" => "yyyy-MM-dd HH:mm:ssZ",
            "s" => "yyyy-MM-ddTHH:mm:ss",
            "d" => "M/d/yyyy",
            "D" => "dddd, MMMM d, yyyy",
            "g" => "M/d/yyyy h:mm tt",
            "G" => "M/d/yyyy h:mm:ss tt",
            "t" => "h:mm tt",
            "T" => "h:mm:ss tt",
            "r" | "R" => "ddd, dd MMM yyyy HH:mm:ss 'GMT'",
            f => f,
        };
        let days = self.secs.div_euclid(86_400);
        let time = self.secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        let (h, mi, s) = (time / 3600, time % 3600 / 60, time % 60);
        let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday (4).
        let chars: Vec<char> = fmt.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let mut n = 1;
            while i + n < chars.len() && chars[i + n] == c {
                n += 1;
            }
            match c {
                'y' => {
                    match n {
                        1 => out.push_str(&(y % 100).to_string()),
                        2 => out.push_str(&format!("{:02}", y.rem_euclid(100))),
                        _ => out.push_str(&format!("{y:0n$}")),
                    }
                    i += n;
                }
                'M' => {
                    match n {
                        1 => out.push_str(&mo.to_string()),
                        2 => out.push_str(&format!("{mo:02}")),
                        3 => out.push_str(&MONTHS[(mo - 1) as usize][..3]),
                        _ => out.push_str(MONTHS[(mo - 1) as usize]),
                    }
                    i += n;
                }
                'd' => {
                    match n {
                        1 => out.push_str(&d.to_string()),
                        2 => out.push_str(&format!("{d:02}")),
                        3 => out.push_str(&WEEKDAYS[weekday as usize][..3]),
                        _ => out.push_str(WEEKDAYS[weekday as usize]),
                    }
                    i += n;
                }
                'H' => {
                    out.push_str(&if n == 1 {
                        h.to_string()
                    } else {
                        format!("{h:02}")
                    });
                    i += n;
                }
                'h' => {
                    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
                    out.push_str(&if n == 1 {
                        h12.to_string()
                    } else {
                        format!("{h12:02}")
                    });
                    i += n;
                }
                'm' => {
                    out.push_str(&if n == 1 {
                        mi.to_string()
                    } else {
                        format!("{mi:02}")
                    });
                    i += n;
                }
                's' => {
                    out.push_str(&if n == 1 {
                        s.to_string()
                    } else {
                        format!("{s:02}")
                    });
                    i += n;
                }
                'f' | 'F' => {
                    let digits = format!("{:09}", self.nanos);
                    let take = n.min(9);
                    let mut part: String = digits.chars().take(take).collect();
                    while part.len() < n {
                        part.push('0');
                    }
                    if c == 'F' {
                        part = part.trim_end_matches('0').to_string();
                    }
                    out.push_str(&part);
                    i += n;
                }
                't' => {
                    let ampm = if h < 12 { "AM" } else { "PM" };
                    out.push_str(if n == 1 { &ampm[..1] } else { ampm });
                    i += n;
                }
                'K' => {
                    out.push('Z');
                    i += n;
                }
                'z' => {
                    out.push_str(match n {
                        1 => "+0",
                        2 => "+00",
                        _ => "+00:00",
                    });
                    i += n;
                }
                '\'' | '"' => {
                    i += 1;
                    while i < chars.len() && chars[i] != c {
                        out.push(chars[i]);
                        i += 1;
                    }
                    i += 1;
                }
                '\\' => {
                    if let Some(next) = chars.get(i + 1) {
                        out.push(*next);
                    }
                    i += 2;
                }
                other => {
                    out.push(other);
                    i += 1;
                }
            }
        }
        out
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

struct Duration {
    negative: bool,
    years: i64,
    months: i64,
    days: i64,
    hours: i64,
    minutes: i64,
    seconds: i64,
}

impl Duration {
    fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let s = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
        let mut d = Duration {
            negative,
            years: 0,
            months: 0,
            days: 0,
            hours: 0,
            minutes: 0,
            seconds: 0,
        };
        let mut in_time = false;
        let mut num = String::new();
        let mut any = false;
        for c in s.chars() {
            match c.to_ascii_uppercase() {
                'T' if num.is_empty() && !in_time => in_time = true,
                c if c.is_ascii_digit() => num.push(c),
                unit => {
                    let v: i64 = num.parse().ok()?;
                    num.clear();
                    any = true;
                    match (unit, in_time) {
                        ('Y', false) => d.years += v,
                        ('M', false) => d.months += v,
                        ('W', false) => d.days += v * 7,
                        ('D', false) => d.days += v,
                        ('H', true) => d.hours += v,
                        ('M', true) => d.minutes += v,
                        ('S', true) => d.seconds += v,
                        _ => return None,
                    }
                }
            }
        }
        (any && num.is_empty()).then_some(d)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let t = DateTime::parse("2020-04-07T14:53:14Z").unwrap();
        assert_eq!(t.secs, 1_586_271_194);
        assert_eq!(t.format(None), "2020-04-07T14:53:14Z");
        assert_eq!(
            DateTime::parse("2020-04-07 16:53:14+02:00").unwrap().secs,
            t.secs
        );
        assert_eq!(
            DateTime::parse("2020-04-07").unwrap().format(None),
            "2020-04-07T00:00:00Z"
        );
        assert_eq!(t.format(Some("yyyyMMddTHHmmssZ")), "20200407T145314Z");
        assert_eq!(t.format(Some("u")), "2020-04-07 14:53:14Z");
        assert_eq!(t.format(Some("d")), "4/7/2020");
        assert_eq!(t.format(Some("r")), "Tue, 07 Apr 2020 14:53:14 GMT");
        assert_eq!(
            DateTime::parse("2020-04-07T14:53:14.1234567Z")
                .unwrap()
                .format(Some("o")),
            "2020-04-07T14:53:14.1234567Z"
        );
        assert!(DateTime::parse("2020-02-30").is_none());
        assert!(DateTime::parse("yesterday").is_none());
        assert_eq!(DateTime::from_epoch(0).format(None), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn durations() {
        let t = DateTime::parse("2020-01-31T00:00:00Z").unwrap();
        let add = |d: &str| t.add_duration(d).unwrap().format(None);
        assert_eq!(add("P1M"), "2020-02-29T00:00:00Z");
        assert_eq!(add("P3Y"), "2023-01-31T00:00:00Z");
        assert_eq!(add("PT1H30M"), "2020-01-31T01:30:00Z");
        assert_eq!(add("P2W"), "2020-02-14T00:00:00Z");
        assert_eq!(add("-P1D"), "2020-01-30T00:00:00Z");
        assert_eq!(add("P1DT1S"), "2020-02-01T00:00:01Z");
        assert!(t.add_duration("1D").is_none());
        assert!(t.add_duration("P").is_none());
        assert!(t.add_duration("PT1D").is_none());
    }
}
