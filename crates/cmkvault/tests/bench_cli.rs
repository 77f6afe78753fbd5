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
    let cases: [(&[&str], &str); 5] = [
        (&["bench", "envelope", "--rounds", "0"], "--rounds"),
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

/// `X MB/s, Y files/s (Z s)` → (X, Y).
fn rates(text: &str) -> (f64, f64) {
    let mut parts = text.split(", ");
    let mbps = parts.next().unwrap().strip_suffix(" MB/s").unwrap();
    let fps = parts.next().unwrap().split(" files/s").next().unwrap();
    (mbps.parse().unwrap(), fps.parse().unwrap())
}

/// `bench envelope` in `dir`; checks the temp files are gone afterwards.
fn envelope_bench(args: &[&str]) -> String {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("benchdir");
    std::fs::create_dir(&dir).unwrap();
    let mut all = vec!["bench", "envelope", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = success(run(cmkvault(&all), tmp.path()), &all.join(" "));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "temporary files left in {}",
        dir.display()
    );
    out
}

#[test]
fn envelope_bench_prints_copy_encrypt_decrypt_raw_and_ratios() {
    for (args, header) in [
        (
            &["--size", "5MiB", "--rounds", "2"][..],
            "size=5MiB files=1 bytes=5242880 threads=1 fsync=off rounds=2",
        ),
        (
            &["--files", "3", "--size", "64KiB"][..],
            "size=64KiB files=3 bytes=196608",
        ),
    ] {
        let out = envelope_bench(args);
        let head = line_value(&out, "bench: op=envelope");
        assert!(head.contains("key=local A256KW"), "{out}");
        assert!(head.contains(header), "{out}");
        for phase in ["copy:", "encrypt:", "decrypt:"] {
            let line = line_value(&out, phase);
            let (mbps, fps) = rates(line);
            assert!(mbps > 0.0 && fps > 0.0, "{phase} {out}");
            // Median of the rounds, with the CPU time and the range.
            assert!(line.contains(", cpu "), "{phase} {out}");
            if head.contains("rounds=2") {
                assert!(line.contains("; 2 rounds "), "{phase} {out}");
            }
        }
        let raw = line_value(&out, "raw aes-256-gcm:");
        let mbps: f64 = raw.split(" MB/s").next().unwrap().parse().unwrap();
        assert!(mbps > 0.0, "{out}");
        assert!(raw.contains("4 MiB"), "{out}");
        line_value(&out, "check: the first decrypted file matches its input");
        for r in ["encrypt/copy", "decrypt/copy", "encrypt/raw"] {
            let v = line_value(&out, &format!("ratio {r}:"));
            let pct: f64 = v.split('%').next().unwrap().parse().unwrap();
            assert!(pct > 0.0, "{r}: {out}");
        }
    }
}

#[test]
fn envelope_bench_rewrap_reports_objects_per_second_and_checks_bodies() {
    let out = envelope_bench(&["--rewrap", "--files", "20", "--size", "64KiB"]);
    let head = line_value(&out, "bench: op=envelope");
    assert!(head.contains("mode=rewrap"), "{out}");
    assert!(head.contains("to=local A256KW"), "{out}");
    rates(line_value(&out, "encrypt:"));
    let rewrap = line_value(&out, "rewrap:");
    assert!(rewrap.starts_with("20 objects in "), "{out}");
    let ops: f64 = rewrap
        .split(", ")
        .nth(1)
        .unwrap()
        .split(" objects/s")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ops > 0.0, "{out}");
    assert!(
        line_value(&out, "rewrap check:").starts_with("body unchanged in 16 sampled objects"),
        "{out}"
    );
}

#[test]
fn bad_envelope_bench_flags_get_one_error_line() {
    let tmp = TempDir::new().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["bench", "envelope", "--rounds", "0"], "--rounds"),
        (&["bench", "unwrapkey", "--size", "1MiB"], "bench envelope"),
        (&["bench", "envelope", "--size", "1TB"], "KiB, MiB or GiB"),
        (&["bench", "envelope", "--files", "0"], "--files"),
        (
            &["bench", "envelope", "--dir", "/nonexistent/cmkvault-bench"],
            "not a directory",
        ),
    ];
    for (args, needle) in cases {
        let line = one_error_line(run(cmkvault(args), tmp.path()), &args.join(" "));
        assert!(line.contains(needle), "{args:?}: {line}");
    }
}

#[test]
fn scan_bench_evaluates_the_pack_over_a_synthetic_inventory() {
    let scratch = TempDir::new().unwrap();
    let out = success(
        run(
            cmkvault(&["bench", "scan", "--resources", "200"]),
            scratch.path(),
        ),
        "bench scan",
    );
    let head = line_value(&out, "scan:");
    assert!(head.starts_with("200 resources"), "{out}");
    let eval = line_value(&out, "evaluate:");
    // Some results, some of them non-compliant (the inventory mixes CMK and no CMK).
    let results: u64 = eval
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(results > 200, "{out}");
    assert!(!eval.contains("(0 non-compliant)"), "{out}");
    let o = run(
        cmkvault(&["bench", "scan", "--resources", "0"]),
        scratch.path(),
    );
    assert!(one_error_line(o, "bench scan --resources 0").contains("--resources"));
}
