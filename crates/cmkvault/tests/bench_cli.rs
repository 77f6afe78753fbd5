//! `cmkvault bench`: a short run against the embedded server prints its metric lines, and
//! `--audit both` loads an audit-on and an audit-off server in alternating slices and reports
//! both throughputs and their ratio. Figures are printed, never asserted (the machine is noisy).
// Test code may unwrap, expect and panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod common;

use common::{cmkvault, one_error_line, run, success};
use tempfile::TempDir;

/// The value after `prefix` on the stdout line that starts with it.
fn line_value<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
        .trim()
}

/// `N ok, M errors` → (N, M).
fn counts(text: &str) -> (u64, u64) {
    let mut nums = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

#[test]
fn audit_both_reports_each_side_and_the_ratio() {
    let tmp = TempDir::new().unwrap();
    let out = success(
        run(
            cmkvault(&[
                "bench",
                "wrapkey",
                "--audit",
                "both",
                "--duration",
                "2s",
                "--warmup",
                "0s",
                "--concurrency",
                "2",
            ]),
            tmp.path(),
        ),
        "bench --audit both",
    );
    assert!(
        line_value(&out, "bench: op=wrapkey").contains("audit=both slices=2x1s"),
        "{out}"
    );
    for side in ["audit=on", "audit=off"] {
        let (ok, errors) = counts(line_value(&out, &format!("{side} requests:")));
        assert!(ok > 0, "{side} made no request:\n{out}");
        assert_eq!(errors, 0, "{side}:\n{out}");
        let throughput = line_value(&out, &format!("{side} throughput:"));
        assert!(throughput.ends_with("ops/s"), "{out}");
        assert!(line_value(&out, &format!("{side} latency:")).starts_with("p50="));
    }
    let ratio = line_value(&out, "audit ratio:");
    let pct: f64 = ratio.split('%').next().unwrap().parse().unwrap();
    assert!(pct > 0.0, "{ratio}");
    assert!(ratio.contains("per round min"), "{ratio}");
}

#[test]
fn bad_bench_flags_get_one_error_line() {
    let tmp = TempDir::new().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "bench",
                "unwrapkey",
                "--audit",
                "both",
                "--url",
                "https://127.0.0.1:1",
            ],
            "embedded server only",
        ),
        (
            &["bench", "unwrapkey", "--audit", "both", "--key", "k1"],
            "drop --key",
        ),
        (&["bench", "unwrapkey", "--audit", "maybe"], "maybe"),
        (&["bench", "rotate"], "rotate"),
    ];
    for (args, needle) in cases {
        let line = one_error_line(run(cmkvault(args), tmp.path()), &args.join(" "));
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}
