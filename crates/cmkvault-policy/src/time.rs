//! Date-times and ISO-8601 durations without a date library: what `utcNow`, `addDays`, the
//! date comparisons of the policy conditions and the Key Vault data-plane mapping need.
//!
//! A date-time is held as an [`Instant`]: seconds since the Unix epoch (UTC) and nanoseconds.

/// A point in time, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Instant {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub(crate) secs: i64,
    /// Nanoseconds within the second (0..1e9).
    pub(crate) nanos: u32,
}

impl Instant {
    /// From seconds since the epoch.
    pub(crate) fn from_secs(secs: i64) -> Instant {
        Instant { secs, nanos: 0 }
    }

    /// This instant plus `secs` seconds (saturating).
    pub(crate) fn plus_secs(self, secs: i64) -> Instant {
        Instant {
            secs: self.secs.saturating_add(secs),
            nanos: self.nanos,
        }
    }
}

/// Days since the epoch of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(s.iter().fold(0, |a, c| a * 10 + u32::from(c - b'0')))
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

/// Parses an ISO-8601 date or date-time: `YYYY-MM-DD`, optionally `THH:MM[:SS[.f…]]` (or a
/// space for `T`) and a zone `Z` / `±HH:MM` (none = UTC). `None` when it is not one.
pub(crate) fn parse_datetime(s: &str) -> Option<Instant> {
    let mut c = Cursor {
        b: s.trim().as_bytes(),
        i: 0,
    };
    let y = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let mo = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let d = c.digits(2)?;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    let (mut h, mut mi, mut se, mut nanos) = (0u32, 0u32, 0u32, 0u32);
    let mut offset: i64 = 0;
    if !c.done() {
        if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
            return None;
        }
        h = c.digits(2)?;
        if !c.eat(b':') {
            return None;
        }
        mi = c.digits(2)?;
        if c.eat(b':') {
            se = c.digits(2)?;
            if c.eat(b'.') || c.eat(b',') {
                let mut scale = 100_000_000u32;
                let mut any = false;
                while let Some(ch) = c.peek().filter(u8::is_ascii_digit) {
                    nanos += u32::from(ch - b'0') * scale;
                    scale /= 10;
                    c.i += 1;
                    any = true;
                }
                if !any {
                    return None;
                }
            }
        }
        if h > 23 || mi > 59 || se > 60 {
            return None;
        }
        match c.peek() {
            None => {}
            Some(b'Z' | b'z') => c.i += 1,
            Some(sign @ (b'+' | b'-')) => {
                c.i += 1;
                let oh = c.digits(2)?;
                c.eat(b':');
                let om = c.digits(2)?;
                let off = i64::from(oh * 3600 + om * 60);
                offset = if sign == b'+' { off } else { -off };
            }
            Some(_) => return None,
        }
        if !c.done() {
            return None;
        }
    }
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se) - offset;
    Some(Instant { secs, nanos })
}

/// `yyyy-MM-ddTHH:mm:ss.fffffffZ` (the format of Azure Policy's `utcNow()` and `addDays()`).
pub(crate) fn format_precise(t: Instant) -> String {
    let (date, h, m, s) = split(t);
    format!("{date}T{h:02}:{m:02}:{s:02}.{:07}Z", t.nanos / 100)
}

/// `yyyy-MM-ddTHH:mm:ssZ` (epoch-second values such as a key's `exp`).
pub(crate) fn format_seconds(t: Instant) -> String {
    let (date, h, m, s) = split(t);
    format!("{date}T{h:02}:{m:02}:{s:02}Z")
}

fn split(t: Instant) -> (String, i64, i64, i64) {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    (
        format!("{y:04}-{mo:02}-{d:02}"),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

/// Formats with a .NET-style format string, the subset `utcNow(format)` is used with:
/// the standard formats `u`, `o`/`O`, `s`, `d` and custom `yyyy MM dd HH mm ss f…` patterns.
pub(crate) fn format_dotnet(t: Instant, fmt: &str) -> String {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let pattern = match fmt {
        "u" => "yyyy-MM-dd HH:mm:ssZ",
        "o" | "O" => "yyyy-MM-ddTHH:mm:ss.fffffffZ",
        "s" => "yyyy-MM-ddTHH:mm:ss",
        "d" => "MM/dd/yyyy",
        other => other,
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        match c {
            'y' if n >= 4 => out.push_str(&format!("{y:04}")),
            'y' => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            'M' => out.push_str(&format!("{mo:0n$}")),
            'd' => out.push_str(&format!("{d:0n$}")),
            'H' => out.push_str(&format!("{h:0n$}")),
            'm' => out.push_str(&format!("{mi:0n$}")),
            's' => out.push_str(&format!("{s:0n$}")),
            'f' | 'F' => {
                let digits = format!("{:09}", t.nanos);
                out.push_str(&digits[..n.min(9)]);
            }
            _ => {
                for _ in 0..n {
                    out.push(c);
                }
            }
        }
        i += n;
    }
    out
}

/// An ISO-8601 duration (`P1Y2M10DT2H30M`, `P90D`, `P2W`): calendar months and seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duration {
    months: i64,
    secs: i64,
}

/// Parses an ISO-8601 duration; `None` when it is not one.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    let mut months = 0i64;
    let mut secs = 0i64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && num.is_empty() => in_time = true,
            d if d.is_ascii_digit() => num.push(d),
            unit => {
                let n: i64 = num.parse().ok()?;
                num.clear();
                any = true;
                match (in_time, unit) {
                    (false, 'Y') => months += n * 12,
                    (false, 'M') => months += n,
                    (false, 'W') => secs += n * 7 * 86_400,
                    (false, 'D') => secs += n * 86_400,
                    (true, 'H') => secs += n * 3600,
                    (true, 'M') => secs += n * 60,
                    (true, 'S') => secs += n,
                    _ => return None,
                }
            }
        }
    }
    (any && num.is_empty()).then_some(Duration { months, secs })
}

/// `t + sign * d` (months added on the calendar, the day clamped to the month's length).
pub(crate) fn add_duration(t: Instant, d: Duration, sign: i64) -> Instant {
    let days = t.secs.div_euclid(86_400);
    let rem = t.secs.rem_euclid(86_400);
    let (y, m, day) = civil_from_days(days);
    let total = y * 12 + i64::from(m) - 1 + sign * d.months;
    let ny = total.div_euclid(12);
    let nm = (total.rem_euclid(12) + 1) as u32;
    let nd = day.min(days_in_month(ny, nm));
    let secs = days_from_civil(ny, nm, nd) * 86_400 + rem + sign * d.secs;
    Instant {
        secs,
        nanos: t.nanos,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let t = parse_datetime("2024-02-29T12:34:56.5Z").unwrap();
        assert_eq!(format_precise(t), "2024-02-29T12:34:56.5000000Z");
        assert_eq!(
            format_seconds(Instant::from_secs(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            parse_datetime("2021-01-01").unwrap(),
            Instant::from_secs(1_609_459_200)
        );
        assert_eq!(
            parse_datetime("2021-01-01T02:00:00+02:00").unwrap(),
            Instant::from_secs(1_609_459_200)
        );
        assert!(parse_datetime("2021-06-01-preview").is_none());
        assert!(parse_datetime("2021-02-30").is_none());
        assert!(parse_datetime("Audit").is_none());
    }

    #[test]
    fn durations() {
        let t = parse_datetime("2024-01-31T00:00:00Z").unwrap();
        let p1m = parse_duration("P1M").unwrap();
        assert_eq!(
            format_seconds(add_duration(t, p1m, 1)),
            "2024-02-29T00:00:00Z"
        );
        let p90d = parse_duration("P90D").unwrap();
        assert_eq!(
            format_seconds(add_duration(t, p90d, 1)),
            "2024-04-30T00:00:00Z"
        );
        let pt = parse_duration("P1DT2H").unwrap();
        assert_eq!(
            format_seconds(add_duration(t, pt, -1)),
            "2024-01-29T22:00:00Z"
        );
        assert!(parse_duration("90D").is_none());
        assert!(parse_duration("P").is_none());
    }

    #[test]
    fn dotnet_formats() {
        let t = parse_datetime("2019-03-05T17:53:18Z").unwrap();
        assert_eq!(format_dotnet(t, "yyyyMMddTHHmmssZ"), "20190305T175318Z");
        assert_eq!(format_dotnet(t, "u"), "2019-03-05 17:53:18Z");
        assert_eq!(format_dotnet(t, "d"), "03/05/2019");
    }
}
