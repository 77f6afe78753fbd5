//! `cmkvault bench envelope`: file → file envelope encryption against a plain copy of the same
//! bytes (the I/O limit) and raw AES-256-GCM on all cores (the crypto limit), in one run.
//!
//! The KEK is a local A256KW key made for the run, so no server is involved. The input files
//! (`--files N` of `--size S`, random content) go to a temporary directory under `--dir` (else
//! the system temp directory) that is removed at the end, also on error. Encrypt and decrypt
//! run the commands' own per-file code (`envelope_cli::encrypt_file`/`decrypt_file`: a
//! temporary file beside the output, renamed into place), with one KEK call per file, except
//! that outputs are fsynced only with `--fsync` (the commands always sync); the copy is a plain
//! read/write loop with a 1 MiB buffer (fsync per file with `--fsync`). With several files, each
//! phase runs one worker per core over the files; a single file is one stream (the envelope
//! seals its regions on all cores).
//!
//! Fairness: every phase starts after a `sync()` (untimed), so it never pays for the write-back
//! of the input or of an earlier phase's output, and writes into fresh files. An untimed
//! warm-up round (copy, encrypt, decrypt) runs first: on the 2-core VM this was measured on,
//! the first ~1 GB of page cache a process writes can be several times slower than the rest
//! (memory the host has to fault in), which would otherwise land on whichever phase runs
//! first. `--rounds N` (default 3) then repeats copy, encrypt and decrypt N times, rotating
//! their order every round (C E D, E D C, D C E, …), so a phase is not always the one after
//! the same other phase and a drift in the machine's speed hits all three. With several files
//! the outputs of every phase are kept until the end (when they need at most 8 GiB and a quarter of the
//! free space): ext4
//! creates files slowly right after thousands were deleted (its allocator skips recently
//! deleted inodes one by one), which measured the file system's bookkeeping, not the phases. Each line reports the median over the rounds,
//! the CPU time the process used during the phase (user + system, all threads: far below the
//! elapsed time means waiting) and the range; ratios are computed within each round, then the
//! median and range are reported. stdout is one metric per line:
//!
//! ```text
//! bench: op=envelope key=local A256KW size=1GiB files=1 bytes=1073741824 threads=2 fsync=off rounds=3 dir=/tmp/cmkvault-bench-…
//! copy: 1234.5 MB/s, 1.1 files/s (0.870 s, cpu 0.86 s; 3 rounds 1100.2–1300.9 MB/s)
//! encrypt: 1000.1 MB/s, 0.9 files/s (1.074 s, cpu 1.40 s; 3 rounds 950.0–1010.3 MB/s)
//! decrypt: 1100.2 MB/s, 1.0 files/s (0.976 s, cpu 1.30 s; 3 rounds 1050.7–1200.1 MB/s)
//! raw aes-256-gcm: 3000.0 MB/s on 2 threads (256 regions of up to 4 MiB in the layout, no I/O)
//! check: the first decrypted file matches its input (sha-256)
//! ratio encrypt/copy: 81.0% (3 rounds 75.1–85.2%)
//! ratio decrypt/copy: 89.1% (3 rounds 80.3–92.0%)
//! ratio encrypt/raw: 33.3%
//! ```
//!
//! `--rewrap` instead encrypts the files once (the `encrypt:` line) and then times re-wrapping
//! every `.cmk` header in place to a second local key and back, one direction per round (the
//! body is not read or written):
//!
//! ```text
//! rewrap: 10000 objects in 1.234 s, 8103.7 objects/s (3 rounds 1.200–1.300 s)
//! rewrap check: body unchanged in 16 sampled objects; the first decrypts with the key of the last round
//! ```
//!
//! MB is 10^6 bytes.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest::{Context as Digest, SHA256};
use cmkvault_envelope::{
    open_container, read_container, rewrap, write_container, KeySource, LocalKey, OpenOptions,
    SealingKey,
};
use indicatif::ProgressBar;
use tokio::runtime::Handle;

use super::BenchArgs;
use crate::envelope_cli;

/// Region size of the v2 body (and of the raw-limit regions).
const REGION: usize = 4 * 1024 * 1024;
/// Read/write buffer of the copy.
const IO_BUF: usize = 1024 * 1024;
/// Largest `--size` and largest total (`--files` × `--size`).
const MAX_BYTES: u64 = 1 << 40;
/// Most files.
const MAX_FILES: usize = 1_000_000;
/// Most rounds.
const MAX_ROUNDS: usize = 100;
/// Most bytes of outputs kept until the end of a many-file run.
const KEEP_MAX: u64 = 8 << 30;
/// Shortest raw-limit measurement (whole passes over the bytes are repeated until then).
const RAW_MIN: Duration = Duration::from_secs(1);
/// Objects whose body is compared before and after the rewrap.
const REWRAP_SAMPLE: usize = 16;
/// The two local keys (same length, so a rewrapped header fits the reserved space).
const KID_1: &str = "local:bench-kek-1";
const KID_2: &str = "local:bench-kek-2";

/// Parses `1GiB`, `64KiB`, `5MiB`, `512B` or a plain byte count.
pub(super) fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("'{text}' is not a size: use a number with KiB, MiB or GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => bail!("unknown size unit '{other}' in '{text}': use KiB, MiB or GiB"),
    };
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("size '{text}' is too large"))
}

/// `1073741824` → `1GiB`, `65536` → `64KiB`, else bytes.
fn size_label(n: u64) -> String {
    for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= m && n.is_multiple_of(m) {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

/// The validated options.
#[derive(Clone, Debug)]
struct Options {
    size: u64,
    files: usize,
    dir: Option<PathBuf>,
    rewrap: bool,
    fsync: bool,
    rounds: usize,
}

fn options(args: &BenchArgs) -> Result<Options> {
    let size = parse_size(args.size.as_deref().unwrap_or("1GiB")).context("--size")?;
    if size == 0 || size > MAX_BYTES {
        bail!("--size must be between 1 byte and 1TiB");
    }
    let files = args.files.unwrap_or(1);
    if !(1..=MAX_FILES).contains(&files) {
        bail!("--files must be between 1 and {MAX_FILES}");
    }
    if size.saturating_mul(files as u64) > MAX_BYTES {
        bail!("--files × --size must be at most 1TiB");
    }
    let rounds = args.rounds.unwrap_or(3);
    if !(1..=MAX_ROUNDS).contains(&rounds) {
        bail!("--rounds must be between 1 and {MAX_ROUNDS}");
    }
    if let Some(d) = &args.dir {
        if !d.is_dir() {
            bail!("--dir {} is not a directory", d.display());
        }
    }
    Ok(Options {
        size,
        files,
        dir: args.dir.clone(),
        rewrap: args.rewrap,
        fsync: args.fsync,
        rounds,
    })
}

/// Runs `cmkvault bench envelope`.
pub(super) async fn run(args: &BenchArgs) -> Result<()> {
    let opts = options(args)?;
    let rt = Handle::current();
    tokio::task::spawn_blocking(move || run_blocking(&opts, &rt))
        .await
        .context("the envelope benchmark thread failed")?
}

fn run_blocking(opts: &Options, rt: &Handle) -> Result<()> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("cmkvault-bench-");
        b
    };
    let tmp = match &opts.dir {
        Some(d) => builder.tempdir_in(d),
        None => builder.tempdir(),
    }
    .context("cannot create the temporary directory")?;
    let result = bench_in(opts, rt, tmp.path());
    // Removed on every path (TempDir also removes it on drop); report a failure to clean up.
    let path = tmp.path().to_path_buf();
    if let Err(e) = tmp.close() {
        eprintln!("bench: could not remove {}: {e}", path.display());
    }
    result
}

/// One-time keys for the run.
fn local_key(kid: &str) -> Result<LocalKey> {
    let k = zeroize::Zeroizing::new(super::random(32)?);
    LocalKey::from_oct(kid, &k).map_err(|e| anyhow!("cannot make the local key: {e}"))
}

/// Name of file `i` (also the object name bound by the integrity record).
fn name(i: usize) -> String {
    format!("f{i:07}")
}

/// Creates `dir/sub`, returns it.
fn subdir(dir: &Path, sub: &str) -> Result<PathBuf> {
    let p = dir.join(sub);
    fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
    Ok(p)
}

fn threads_for(files: usize) -> usize {
    if files <= 1 {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(files)
    }
}

/// Writes back every dirty page of every file system (untimed, before each phase), so a phase
/// does not pay for the write-back of the input or of an earlier phase's output.
fn sync_everything() {
    #[cfg(unix)]
    rustix::fs::sync();
}

/// Bytes an unprivileged user may still write to the file system of `dir` (0 if unknown).
fn free_bytes(dir: &Path) -> u64 {
    #[cfg(unix)]
    if let Ok(v) = rustix::fs::statvfs(dir) {
        return v.f_bavail.saturating_mul(v.f_frsize);
    }
    let _ = dir;
    0
}

/// CPU time (user + system, all threads, exited ones included) the process has used, from
/// `/proc/self/stat` (10 ms resolution); `None` where that file does not exist.
fn cpu_time() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, utime 14, stime 15 (in 1/100 s).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One timed run of a phase.
#[derive(Clone, Copy, Debug)]
struct Sample {
    elapsed: Duration,
    cpu: Option<Duration>,
    bytes: u64,
}

impl Sample {
    fn mbps(&self) -> f64 {
        mbps(self.bytes, self.elapsed)
    }
}

/// Runs `work(i)` for every file on `threads` workers after a `sync()`; returns the elapsed
/// time, the CPU time used and the sum of what `work` returned (bytes). The first error stops
/// the others.
fn phase<F>(what: &str, files: usize, threads: usize, work: F) -> Result<Sample>
where
    F: Fn(usize) -> Result<u64> + Sync,
{
    sync_everything();
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let cpu_start = cpu_time();
    let start = Instant::now();
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut bytes = 0u64;
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(bytes);
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= files {
                            return Ok(bytes);
                        }
                        match work(i).with_context(|| format!("{what} {}", name(i))) {
                            Ok(n) => bytes += n,
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a {what} worker thread failed")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let cpu = match (cpu_start, cpu_time()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let mut bytes = 0;
    for r in results {
        bytes += r?;
    }
    Ok(Sample {
        elapsed,
        cpu,
        bytes,
    })
}

/// Writes `size` bytes of random content (aws-lc-rs DRBG, 1 MiB at a time).
fn make_input(path: &Path, size: u64, buf: &mut [u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        aws_lc_rs::rand::fill(&mut buf[..n]).map_err(|_| anyhow!("random fill failed"))?;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Plain buffered copy (read into user space, write out: what the envelope does minus crypto;
/// no `copy_file_range`, which would skip user space or reflink).
fn copy_file(src: &Path, dst: &Path, fsync: bool) -> Result<u64> {
    let mut r = File::open(src)?;
    let mut w = File::create(dst)?;
    let mut buf = vec![0u8; IO_BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
    if fsync {
        w.sync_all()?;
    }
    Ok(total)
}

/// `cmkvault encrypt`'s per-file path: one KEK call (wrap), then the file.
fn encrypt_file(
    rt: &Handle,
    kek: &LocalKey,
    object: &str,
    (src, size): (&Path, u64),
    dst: &Path,
    fsync: bool,
) -> Result<u64> {
    let key = rt.block_on(SealingKey::new(kek, object))?;
    envelope_cli::encrypt_file(key, src, dst, false, fsync, ProgressBar::hidden())?;
    // Throughput counts plaintext bytes, like the other phases.
    Ok(size)
}

/// `cmkvault decrypt`'s per-file path: header, one KEK call (unwrap), then the body.
fn decrypt_file(
    rt: &Handle,
    kek: &LocalKey,
    object: &str,
    src: &Path,
    dst: &Path,
    fsync: bool,
) -> Result<u64> {
    let opts = OpenOptions::default();
    let cmk = envelope_cli::open_cmk(src, &opts)?;
    let dek = rt.block_on(KeySource::Key(kek).unwrap_dek(&cmk.envelope))?;
    envelope_cli::decrypt_file(
        cmk,
        &dek,
        object,
        &opts,
        dst,
        false,
        fsync,
        ProgressBar::hidden(),
    )
}

/// SHA-256 of a file from `offset` on.
fn sha256_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut d = Digest::new(&SHA256);
    let mut buf = vec![0u8; IO_BUF];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        d.update(&buf[..n]);
    }
    Ok(d.finish().as_ref().to_vec())
}

/// Length of a `.cmk` file's header (magic, version, length, JSON): where the body starts.
fn body_offset(path: &Path) -> Result<u64> {
    let mut f = File::open(path)?;
    read_container(&mut f)?;
    Ok(f.stream_position()?)
}

/// Re-wraps one `.cmk` header in place (same reserved length; the body is not touched).
fn rewrap_file(
    rt: &Handle,
    from: &LocalKey,
    to: &LocalKey,
    object: &str,
    path: &Path,
    fsync: bool,
) -> Result<u64> {
    let mut f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let meta = read_container(&mut f)?;
    let header_len = f.stream_position()?;
    let json_len = header_len
        .checked_sub(14)
        .ok_or_else(|| anyhow!("container header too short"))? as usize;
    let new = rt.block_on(rewrap(
        KeySource::Key(from),
        to,
        &meta,
        object,
        &OpenOptions::default(),
    ))?;
    let mut header = Vec::with_capacity(header_len as usize);
    write_container(&mut header, &new, Some(json_len))?;
    if header.len() as u64 != header_len {
        bail!("the rewrapped header does not fit the reserved space");
    }
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header)?;
    if fsync {
        f.sync_data()?;
    }
    Ok(0)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// The median and the range of `v` (not empty).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

/// Prints a phase line (the median round) and returns the median MB/s.
fn print_phase(label: &str, samples: &[Sample], files: usize) -> f64 {
    let rates: Vec<f64> = samples.iter().map(Sample::mbps).collect();
    let (median, lo, hi) = spread(&rates);
    // The round whose rate is the median (the lower middle one for an even count).
    let mut order: Vec<&Sample> = samples.iter().collect();
    order.sort_by(|a, b| a.mbps().total_cmp(&b.mbps()));
    let mid = order[(order.len() - 1) / 2];
    let secs = mid.elapsed.as_secs_f64();
    let cpu = mid
        .cpu
        .map(|c| format!(", cpu {:.2} s", c.as_secs_f64()))
        .unwrap_or_default();
    let rounds = if samples.len() > 1 {
        format!("; {} rounds {lo:.1}–{hi:.1} MB/s", samples.len())
    } else {
        String::new()
    };
    println!(
        "{label}: {median:.1} MB/s, {:.1} files/s ({secs:.3} s{cpu}{rounds})",
        files as f64 * median * 1e6 / (mid.bytes.max(1) as f64)
    );
    median
}

/// Prints `ratio LABEL: median% (N rounds lo–hi%)` of per-round ratios `a[r] / b[r]`.
fn print_ratio(label: &str, a: &[Sample], b: &[Sample]) {
    let per_round: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| 100.0 * x.mbps() / y.mbps().max(1e-9))
        .collect();
    let (median, lo, hi) = spread(&per_round);
    if per_round.len() > 1 {
        println!(
            "ratio {label}: {median:.1}% ({} rounds {lo:.1}–{hi:.1}%)",
            per_round.len()
        );
    } else {
        println!("ratio {label}: {median:.1}%");
    }
}

/// The three timed phases; a round runs them in the order rotated by the round number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Copy,
    Encrypt,
    Decrypt,
}

const ORDER: [Kind; 3] = [Kind::Copy, Kind::Encrypt, Kind::Decrypt];

fn bench_in(opts: &Options, rt: &Handle, dir: &Path) -> Result<()> {
    let threads = threads_for(opts.files);
    let total = opts.size * opts.files as u64;
    let mode = if opts.rewrap { " mode=rewrap" } else { "" };
    let to = if opts.rewrap { " to=local A256KW" } else { "" };
    println!(
        "bench: op=envelope{mode} key=local A256KW{to} size={} files={} bytes={total} threads={threads} fsync={} rounds={} dir={}",
        size_label(opts.size),
        opts.files,
        if opts.fsync { "on" } else { "off" },
        opts.rounds,
        dir.display()
    );
    let kek = local_key(KID_1)?;
    let input = subdir(dir, "in")?;
    eprintln!(
        "bench: writing {} input file(s) of {} (random content)",
        opts.files,
        size_label(opts.size)
    );
    let buf_len = opts.size.min(IO_BUF as u64) as usize;
    phase("write input", opts.files, threads, |i| {
        let mut buf = vec![0u8; buf_len];
        make_input(&input.join(name(i)), opts.size, &mut buf).map(|()| opts.size)
    })?;
    let src = |i: usize| input.join(name(i));

    if opts.rewrap {
        let enc = subdir(dir, "enc")?;
        let cmk = |i: usize| enc.join(format!("{}.cmk", name(i)));
        let s = phase("encrypt", opts.files, threads, |i| {
            encrypt_file(
                rt,
                &kek,
                &name(i),
                (&src(i), opts.size),
                &cmk(i),
                opts.fsync,
            )
        })?;
        print_phase("encrypt", &[s], opts.files);
        return bench_rewrap(opts, rt, kek, threads, &src, &cmk);
    }

    let mut samples: [Vec<Sample>; 3] = Default::default();
    // The encrypted files of the latest encrypt phase (round 0 encrypts before it decrypts).
    let mut enc: Option<PathBuf> = None;
    let mut checked = false;
    // Outputs are kept to the end unless that needs more than KEEP_MAX (see the module comment).
    let kept = total.saturating_mul(3 * (opts.rounds as u64 + 1));
    let keep = opts.files > 1 && kept <= KEEP_MAX.min(free_bytes(dir) / 4);
    if opts.files > 1 && !keep {
        eprintln!(
            "bench: outputs are deleted after every phase (keeping them needs {} MB)",
            kept / 1_000_000
        );
    }
    // Round 0 is an untimed warm-up (see the module comment).
    for round in 0..=opts.rounds {
        for k in 0..ORDER.len() {
            let kind = ORDER[(k + round) % ORDER.len()];
            let s = match kind {
                Kind::Copy => {
                    let out = subdir(dir, &format!("copy{round}"))?;
                    let s = phase("copy", opts.files, threads, |i| {
                        copy_file(&src(i), &out.join(name(i)), opts.fsync)
                    })?;
                    if !keep {
                        fs::remove_dir_all(&out).context("cannot remove the copies")?;
                    }
                    s
                }
                Kind::Encrypt => {
                    let out = subdir(dir, &format!("enc{round}"))?;
                    let s = phase("encrypt", opts.files, threads, |i| {
                        let cmk = out.join(format!("{}.cmk", name(i)));
                        encrypt_file(rt, &kek, &name(i), (&src(i), opts.size), &cmk, opts.fsync)
                    })?;
                    if let Some(old) = enc.replace(out) {
                        if !keep {
                            fs::remove_dir_all(&old)
                                .context("cannot remove the encrypted files")?;
                        }
                    }
                    s
                }
                Kind::Decrypt => {
                    let Some(from) = enc.as_deref() else {
                        bail!("decrypt ran before encrypt");
                    };
                    let out = subdir(dir, &format!("dec{round}"))?;
                    let s = phase("decrypt", opts.files, threads, |i| {
                        let cmk = from.join(format!("{}.cmk", name(i)));
                        decrypt_file(rt, &kek, &name(i), &cmk, &out.join(name(i)), opts.fsync)
                    })?;
                    if s.bytes != total {
                        bail!("decrypt produced {} bytes, expected {total}", s.bytes);
                    }
                    if !checked {
                        if sha256_from(&src(0), 0)? != sha256_from(&out.join(name(0)), 0)? {
                            bail!("the first decrypted file differs from its input");
                        }
                        checked = true;
                    }
                    if !keep {
                        fs::remove_dir_all(&out).context("cannot remove the decrypted files")?;
                    }
                    s
                }
            };
            let which = if round == 0 {
                "warm-up".to_string()
            } else {
                format!("round {round}")
            };
            eprintln!(
                "bench: {which} {kind:?}: {:.1} MB/s ({:.3} s{})",
                s.mbps(),
                s.elapsed.as_secs_f64(),
                s.cpu
                    .map(|c| format!(", cpu {:.2} s", c.as_secs_f64()))
                    .unwrap_or_default()
            );
            if round > 0 {
                samples[kind as usize].push(s);
            }
        }
    }
    let [copy, encrypt, decrypt] = &samples;
    print_phase("copy", copy, opts.files);
    let enc_rate = print_phase("encrypt", encrypt, opts.files);
    print_phase("decrypt", decrypt, opts.files);

    let (raw_rate, raw_threads, regions) = raw_gcm(opts.size, opts.files)?;
    println!(
        "raw aes-256-gcm: {raw_rate:.1} MB/s on {raw_threads} threads ({regions} regions of up to 4 MiB in the layout, no I/O)"
    );
    println!("check: the first decrypted file matches its input (sha-256)");
    print_ratio("encrypt/copy", encrypt, copy);
    print_ratio("decrypt/copy", decrypt, copy);
    println!(
        "ratio encrypt/raw: {:.1}%",
        100.0 * enc_rate / raw_rate.max(1e-9)
    );
    Ok(())
}

fn bench_rewrap(
    opts: &Options,
    rt: &Handle,
    kek: LocalKey,
    threads: usize,
    src: &(dyn Fn(usize) -> PathBuf + Sync),
    cmk: &(dyn Fn(usize) -> PathBuf + Sync),
) -> Result<()> {
    let keys = [kek, local_key(KID_2)?];
    let sample: Vec<usize> = {
        let k = REWRAP_SAMPLE.min(opts.files);
        let mut s: Vec<usize> = (0..k).map(|j| j * opts.files / k).collect();
        s.dedup();
        s
    };
    let before = sample
        .iter()
        .map(|&i| {
            let off = body_offset(&cmk(i))?;
            Ok((off, sha256_from(&cmk(i), off)?))
        })
        .collect::<Result<Vec<_>>>()?;

    // Round r re-wraps from keys[r % 2] to the other key.
    let mut times = Vec::with_capacity(opts.rounds);
    for round in 0..opts.rounds {
        let (from, to) = (&keys[round % 2], &keys[(round + 1) % 2]);
        let s = phase("rewrap", opts.files, threads, |i| {
            rewrap_file(rt, from, to, &name(i), &cmk(i), opts.fsync)
        })?;
        eprintln!(
            "bench: round {} rewrap: {:.3} s",
            round + 1,
            s.elapsed.as_secs_f64()
        );
        times.push(s.elapsed.as_secs_f64());
    }
    let (median, lo, hi) = spread(&times);
    let rounds = if times.len() > 1 {
        format!(" ({} rounds {lo:.3}–{hi:.3} s)", times.len())
    } else {
        String::new()
    };
    println!(
        "rewrap: {} objects in {median:.3} s, {:.1} objects/s{rounds}",
        opts.files,
        opts.files as f64 / median.max(1e-9)
    );

    for (&i, (off, digest)) in sample.iter().zip(&before) {
        if body_offset(&cmk(i))? != *off || sha256_from(&cmk(i), *off)? != *digest {
            bail!("the body of {} changed during the rewrap", name(i));
        }
    }
    // The first sample now opens with the key of the last round (and yields the plaintext).
    let last = &keys[opts.rounds % 2];
    let first = sample.first().copied().unwrap_or(0);
    let mut out = Digest::new(&SHA256);
    let r = BufReader::with_capacity(IO_BUF, File::open(cmk(first))?);
    rt.block_on(open_container(
        KeySource::Key(last),
        &name(first),
        r,
        DigestWriter(&mut out),
        &OpenOptions::default(),
    ))
    .with_context(|| format!("{} does not open with the new key", name(first)))?;
    if out.finish().as_ref() != sha256_from(&src(first), 0)?.as_slice() {
        bail!("{} decrypts to other bytes after the rewrap", name(first));
    }
    println!(
        "rewrap check: body unchanged in {} sampled objects; the first decrypts with the key of the last round",
        sample.len()
    );
    Ok(())
}

/// A writer that only hashes.
struct DigestWriter<'a>(&'a mut Digest);

impl Write for DigestWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// AES-256-GCM sealing in place over the files' region layout (each file cut into 4 MiB
/// regions, the last one shorter), on every core, for at least [`RAW_MIN`]: each thread seals
/// its own random buffer (filled before the clock starts) region after region, the region
/// sizes cycling through the layout. Returns (MB/s, threads, regions per pass).
fn raw_gcm(size: u64, files: usize) -> Result<(f64, usize, usize)> {
    let per_file = size.div_ceil(REGION as u64) as usize;
    let last = (size - (per_file as u64 - 1) * REGION as u64) as usize;
    let regions = per_file * files;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(regions);
    let key_bytes = zeroize::Zeroizing::new(super::random(32)?);
    let key = UnboundKey::new(&AES_256_GCM, &key_bytes)
        .map(LessSafeKey::new)
        .map_err(|_| anyhow!("AES-256-GCM key setup failed"))?;
    let region_len = |r: usize| {
        if r % per_file == per_file - 1 {
            last
        } else {
            REGION
        }
    };
    let buffers = (0..threads)
        .map(|_| {
            let mut buf = vec![0u8; REGION.min(size as usize)];
            aws_lc_rs::rand::fill(&mut buf).map_err(|_| anyhow!("random fill failed"))?;
            Ok(buf)
        })
        .collect::<Result<Vec<_>>>()?;
    // One counter over all seals: region r % regions of the layout, nonce r (unique).
    let next = AtomicUsize::new(0);
    let barrier = std::sync::Barrier::new(threads + 1);
    let (key, next, barrier) = (&key, &next, &barrier);
    let (elapsed, done) = std::thread::scope(|s| -> Result<(Duration, u64)> {
        let handles: Vec<_> = buffers
            .into_iter()
            .map(|mut buf| {
                s.spawn(move || -> Result<u64> {
                    barrier.wait();
                    let start = Instant::now();
                    let mut done = 0u64;
                    while start.elapsed() < RAW_MIN {
                        let r = next.fetch_add(1, Ordering::Relaxed);
                        let len = region_len(r % regions);
                        let mut n = [0u8; 12];
                        n[4..].copy_from_slice(&(r as u64).to_be_bytes());
                        let tag = key
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(n),
                                Aad::empty(),
                                &mut buf[..len],
                            )
                            .map_err(|_| anyhow!("AES-256-GCM seal failed"))?;
                        let _ = std::hint::black_box(tag);
                        done += len as u64;
                    }
                    Ok(done)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut done = 0u64;
        for h in handles {
            done += h
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a raw-limit thread failed")))?;
        }
        Ok((start.elapsed(), done))
    })?;
    Ok((mbps(done, elapsed), threads, regions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("5mib").unwrap(), 5 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(size_label(1 << 30), "1GiB");
        assert_eq!(size_label(64 << 10), "64KiB");
        assert_eq!(size_label(1000), "1000B");
    }
}
