//! Streaming encryption and decryption of a v2 body, a batch of regions at a time, sealed and
//! opened on all cores. While one batch is sealed (opened) on a worker thread, the caller's
//! thread does the I/O: it writes the previous batch and reads the next one, so reading,
//! crypto and writing overlap. Memory: two batches (the one being filled or handed out and the
//! one on the worker), each `min(cores, 8)` regions of `DataLength + 28` bytes (one region
//! for regions of 64 MiB or more): 16 MiB on 2 cores, at most 64 MiB, for 4 MiB regions.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::envelope::{DataKey, Envelope, EnvelopeMetadata, OpenOptions, SealingKey};
use crate::format::{python_nonce, NonceValidator, NONCE_LEN, REGION_OVERHEAD, TAG_LEN};
use crate::EnvelopeError;

/// The cores this process may use, asked once: `available_parallelism` reads the cgroup
/// files on every call (about 20 system calls), which was a tenth of a small file's cost.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Regions per batch: one per core, at most 8.
fn batch_regions(data_length: u64) -> usize {
    if data_length >= 64 * 1024 * 1024 {
        1
    } else {
        cores().clamp(1, 8)
    }
}

/// The most buffer memory one [`EncryptWriter`] or [`DecryptReader`] with regions of
/// `data_length` bytes holds: two batches of regions (an object smaller than a batch holds
/// about twice its size, the buffers growing only as far as the data reaches).
pub fn stream_buffer_bound(data_length: u64) -> u64 {
    2 * batch_regions(data_length) as u64 * (data_length + REGION_OVERHEAD)
}

/// Smallest batch handed to a worker thread; smaller ones are sealed (opened) on the caller's
/// thread.
const WORKER_MIN: usize = 1024 * 1024;

/// First growth step of a buffer (then doubling up to a region), so a small object does not
/// allocate and zero a whole region.
const GROW_MIN: usize = 64 * 1024;

/// Threads for the crypto of one batch: all cores on the caller's thread; one core fewer on a
/// worker thread, whose caller is meanwhile busy with the I/O (on 2 cores: one thread reads
/// and writes, one seals or opens).
fn crypto_threads(on_worker: bool) -> usize {
    if on_worker {
        cores().saturating_sub(1).max(1)
    } else {
        cores()
    }
}

fn aead_key(dek: &DataKey) -> Result<Arc<LessSafeKey>, EnvelopeError> {
    UnboundKey::new(&AES_256_GCM, &dek.0[..])
        .map(|k| Arc::new(LessSafeKey::new(k)))
        .map_err(|_| EnvelopeError::Crypto("AES-256-GCM key setup failed".into()))
}

fn worker_failed() -> EnvelopeError {
    EnvelopeError::Crypto("a region worker thread failed".into())
}

/// Runs `f(i, region)` on every region, on up to `threads` threads when the batch is large
/// enough (the calling thread takes the last group); the first error in region order wins.
fn for_each_region<F>(regions: Vec<&mut [u8]>, threads: usize, f: F) -> Result<(), EnvelopeError>
where
    F: Fn(usize, &mut [u8]) -> Result<(), EnvelopeError> + Sync,
{
    let total: usize = regions.iter().map(|r| r.len()).sum();
    if regions.len() <= 1 || total < 256 * 1024 || threads <= 1 {
        for (i, r) in regions.into_iter().enumerate() {
            f(i, r)?;
        }
        return Ok(());
    }
    let threads = threads.min(regions.len());
    let per = regions.len().div_ceil(threads);
    let mut groups: Vec<Vec<(usize, &mut [u8])>> = Vec::new();
    for (i, r) in regions.into_iter().enumerate() {
        if i % per == 0 {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push((i, r));
        }
    }
    let f = &f;
    let run = move |g: Vec<(usize, &mut [u8])>| -> Result<(), EnvelopeError> {
        for (i, r) in g {
            f(i, r)?;
        }
        Ok(())
    };
    let mine = groups.pop();
    let results: Vec<Result<(), EnvelopeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| s.spawn(move || run(g)))
            .collect();
        let last = mine.map_or(Ok(()), run);
        let mut out: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(worker_failed())))
            .collect();
        out.push(last);
        out
    });
    results.into_iter().collect()
}

/// Reads into `buf[at..at + want]` until it is full or the input ends, growing `buf` (zeroed)
/// only as far as the data reaches; returns the bytes read. A buffer kept from an earlier
/// batch is read into directly, a whole region per call.
fn read_full<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    at: usize,
    want: usize,
) -> io::Result<usize> {
    let mut got = 0;
    while got < want {
        let pos = at + got;
        if buf.len() <= pos {
            let grow = (want - got).min(got.max(GROW_MIN));
            buf.resize(pos + grow, 0);
        }
        let end = buf.len().min(at + want);
        match r.read(&mut buf[pos..end]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Seals the regions laid out in `buf` (`nonce ‖ plaintext ‖ tag space`, each `slot_len` bytes
/// but the last), the first being region `first`.
fn seal_regions(
    aead: &LessSafeKey,
    buf: &mut [u8],
    slot_len: usize,
    first: u64,
    threads: usize,
) -> Result<(), EnvelopeError> {
    let regions: Vec<&mut [u8]> = buf.chunks_mut(slot_len).collect();
    for_each_region(regions, threads, |i, region| {
        let len = region.len() - NONCE_LEN - TAG_LEN;
        let nonce = python_nonce(first + i as u64);
        region[..NONCE_LEN].copy_from_slice(&nonce);
        let (body, tag_space) = region[NONCE_LEN..].split_at_mut(len);
        let tag = aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), body)
            .map_err(|_| EnvelopeError::Crypto("AES-256-GCM seal failed".into()))?;
        tag_space.copy_from_slice(tag.as_ref());
        Ok(())
    })
}

/// A batch being sealed on a worker thread: its buffer and the bytes in use.
type Sealing = JoinHandle<Result<(Vec<u8>, usize), EnvelopeError>>;

/// Encrypts a stream into a v2 body: `std::io::Write` the plaintext (or [`Self::read_from`] a
/// reader), then [`Self::finalize`] to seal the last region and get the metadata. A full batch
/// is sealed on a worker thread while the next one fills; memory: two batches.
pub struct EncryptWriter<W: Write> {
    inner: W,
    key: SealingKey,
    aead: Arc<LessSafeKey>,
    /// Region slots (`nonce ‖ plaintext ‖ tag space`), filled in order.
    buf: Vec<u8>,
    /// Plaintext bytes in the current (last) slot.
    cur: usize,
    /// Slots in use (the current one included once it has a byte).
    slots: usize,
    batch: usize,
    next_index: u64,
    plaintext_len: u64,
    /// The previous batch, being sealed on a worker thread; written before the next one.
    pending: Option<Sealing>,
    /// A written batch's buffer, reused for the next one.
    spare: Vec<u8>,
}

impl<W: Write> core::fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("key", &self.key)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl<W: Write> EncryptWriter<W> {
    /// A writer sealing into `inner` with `key`.
    pub fn new(key: SealingKey, inner: W) -> Result<EncryptWriter<W>, EnvelopeError> {
        let aead = aead_key(&key.dek)?;
        let batch = batch_regions(key.data_length);
        Ok(EncryptWriter {
            inner,
            key,
            aead,
            buf: Vec::new(),
            cur: 0,
            slots: 0,
            batch,
            next_index: 0,
            plaintext_len: 0,
            pending: None,
            spare: Vec::new(),
        })
    }

    fn slot_len(&self) -> usize {
        self.key.data_length as usize + REGION_OVERHEAD as usize
    }

    /// Waits for the batch on the worker thread (if any) and writes it.
    fn write_pending(&mut self) -> Result<(), EnvelopeError> {
        if let Some(h) = self.pending.take() {
            let (buf, used) = h.join().map_err(|_| worker_failed())??;
            self.inner.write_all(&buf[..used])?;
            self.spare = buf;
        }
        Ok(())
    }

    /// Seals the slots in use (all full except possibly the last) and writes them out, after
    /// the batch before them. With `background` (more data follows), a large batch is sealed
    /// on a worker thread and written by a later call, and the caller goes on filling the
    /// other buffer.
    fn flush_slots(&mut self, background: bool) -> Result<(), EnvelopeError> {
        if self.slots == 0 {
            return Ok(());
        }
        let slot_len = self.slot_len();
        let d = self.key.data_length as usize;
        let last_len = if self.cur == 0 { d } else { self.cur };
        let n = self.slots;
        let first = self.next_index;
        let used = (n - 1) * slot_len + NONCE_LEN + last_len + TAG_LEN;
        if self.buf.len() < used {
            self.buf.resize(used, 0);
        }
        self.next_index += n as u64;
        self.slots = 0;
        self.cur = 0;
        let mut buf = std::mem::take(&mut self.buf);
        if background && used >= WORKER_MIN {
            let aead = Arc::clone(&self.aead);
            let handle = std::thread::Builder::new()
                .name("cmkvault-seal".into())
                .spawn(move || {
                    seal_regions(
                        &aead,
                        &mut buf[..used],
                        slot_len,
                        first,
                        crypto_threads(true),
                    )
                    .map(|()| (buf, used))
                })?;
            // The previous batch is written while this one is sealed.
            self.write_pending()?;
            self.pending = Some(handle);
            self.buf = std::mem::take(&mut self.spare);
        } else {
            seal_regions(
                &self.aead,
                &mut buf[..used],
                slot_len,
                first,
                crypto_threads(false),
            )?;
            self.write_pending()?;
            self.inner.write_all(&buf[..used])?;
            self.buf = buf;
        }
        Ok(())
    }

    /// Reads `reader` to its end straight into the region buffers (no intermediate copy; a
    /// whole region per read once the buffers have grown), sealing batches as they fill.
    /// Returns the bytes read. Equivalent to `io::copy(reader, self)`, one copy fewer.
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<u64> {
        self.read_until(reader, false).map(|(n, _)| n)
    }

    /// [`Self::read_from`], but stops once the current batch is full (nothing written);
    /// returns the bytes read and whether the input ended.
    pub(crate) fn read_batch_from<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<(u64, bool)> {
        self.read_until(reader, true)
    }

    fn read_until<R: Read + ?Sized>(
        &mut self,
        reader: &mut R,
        stop_when_full: bool,
    ) -> io::Result<(u64, bool)> {
        let d = self.key.data_length as usize;
        let slot_len = self.slot_len();
        let mut total = 0u64;
        loop {
            // The current slot if it has room, else a new one (after sealing a full batch).
            let (slot, filled) = if self.slots > 0 && self.cur < d {
                (self.slots - 1, self.cur)
            } else {
                if self.slots == self.batch {
                    if stop_when_full {
                        return Ok((total, false));
                    }
                    self.flush_slots(true).map_err(to_io)?;
                }
                (self.slots, 0)
            };
            let at = slot * slot_len + NONCE_LEN + filled;
            let n = read_full(reader, &mut self.buf, at, d - filled)?;
            if n == 0 {
                return Ok((total, true));
            }
            if slot == self.slots {
                self.slots += 1;
                self.cur = 0;
            }
            self.cur += n;
            self.plaintext_len += n as u64;
            total += n as u64;
            if filled + n < d {
                return Ok((total, true)); // the input ended inside this region
            }
        }
    }

    /// Seals what remains, flushes, and returns the metadata (`encryptiondata` + integrity
    /// record) and the inner writer.
    pub fn finalize(mut self) -> Result<(EnvelopeMetadata, W), EnvelopeError> {
        self.flush_slots(false)?;
        self.write_pending()?;
        self.inner.flush()?;
        let meta = self.key.metadata(self.plaintext_len)?;
        Ok((meta, self.inner))
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The inner writer (to write a container header before the body).
    pub(crate) fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The metadata for the plaintext so far.
    pub(crate) fn metadata_now(&self) -> Result<EnvelopeMetadata, EnvelopeError> {
        self.key.metadata(self.plaintext_len)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let d = self.key.data_length as usize;
        let slot_len = self.slot_len();
        let mut done = 0;
        while done < data.len() {
            if self.slots == 0 || self.cur == d {
                if self.slots == self.batch {
                    self.flush_slots(true).map_err(to_io)?;
                }
                // Open a new slot.
                self.slots += 1;
                self.cur = 0;
            }
            let start = (self.slots - 1) * slot_len + NONCE_LEN + self.cur;
            let n = (d - self.cur).min(data.len() - done);
            // Grow only as far as the data reaches (amortised, kept across batches), so a
            // 64 KiB object does not allocate and zero a whole 4 MiB region.
            let end = start + n + TAG_LEN;
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            self.buf[start..start + n].copy_from_slice(&data[done..done + n]);
            self.cur += n;
            done += n;
        }
        self.plaintext_len += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Regions are sealed only when full (or at finalize); flush the inner writer.
        self.inner.flush()
    }
}

/// Wraps an envelope error for the `std::io` traits (recovered by [`from_io`]).
pub(crate) fn to_io(e: EnvelopeError) -> io::Error {
    match e {
        EnvelopeError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// Recovers an envelope error carried through `std::io`.
pub(crate) fn from_io(e: io::Error) -> EnvelopeError {
    if e.get_ref().is_some_and(|r| r.is::<EnvelopeError>()) {
        if let Some(inner) = e.into_inner() {
            return match inner.downcast::<EnvelopeError>() {
                Ok(b) => *b,
                Err(other) => EnvelopeError::Io(io::Error::other(other)),
            };
        }
        return EnvelopeError::Io(io::Error::other("I/O error"));
    }
    EnvelopeError::Io(e)
}

/// Regions read from the body, back to back in `buf`.
struct Batch {
    buf: Vec<u8>,
    /// Region lengths (`nonce ‖ ciphertext ‖ tag`).
    lens: Vec<usize>,
    /// Index of the first region.
    first: u64,
    /// What went wrong right after these regions (a bad nonce, a truncated region, a read
    /// error, too many regions): reported once the regions before it have been opened.
    error: Option<EnvelopeError>,
    /// The body ended with this batch.
    at_end: bool,
}

/// Opens a batch's regions in place (on up to `threads` threads).
fn open_regions(
    aead: &LessSafeKey,
    batch: &mut Batch,
    threads: usize,
) -> Result<(), EnvelopeError> {
    let first = batch.first;
    let mut regions: Vec<&mut [u8]> = Vec::with_capacity(batch.lens.len());
    let mut rest = &mut batch.buf[..];
    for len in &batch.lens {
        let (r, tail) = rest.split_at_mut(*len);
        regions.push(r);
        rest = tail;
    }
    for_each_region(regions, threads, |i, region| {
        let (nonce, ct) = region.split_at_mut(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        aead.open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), ct)
            .map(|_| ())
            .map_err(|_| {
                EnvelopeError::Integrity(format!(
                    "region {} does not authenticate (tampered, wrong DataLength, or from \
                     another object)",
                    first + i as u64
                ))
            })
    })
}

/// A batch being opened: on a worker thread, or already opened on the caller's.
enum Opening {
    Worker(JoinHandle<(Batch, Result<(), EnvelopeError>)>),
    Ready(Batch, Result<(), EnvelopeError>),
}

/// Decrypts a v2 body: `std::io::Read` yields plaintext (or [`Self::copy_to`] writes it);
/// every region is authenticated and its nonce checked against its position before any of its
/// bytes are returned; at end of body the integrity record's length and region count are
/// checked. Any failure is an `io::ErrorKind::InvalidData` error carrying an [`EnvelopeError`]
/// — never short data. The next batch is read ahead and opened on a worker thread while the
/// current one is handed out; memory: two batches.
pub struct DecryptReader<R: Read> {
    inner: R,
    aead: Arc<LessSafeKey>,
    data_length: u64,
    batch: usize,
    nonces: NonceValidator,
    /// Expected (plaintext length, region count) from a verified integrity record.
    expected: Option<(u64, u64)>,
    /// The batch being handed out.
    buf: Vec<u8>,
    /// Plaintext ranges of `buf` still to hand out.
    ranges: VecDeque<(usize, usize)>,
    /// The next batch, read ahead and being opened.
    ahead: Option<Opening>,
    /// A handed-out batch's buffer, reused to read ahead.
    spare: Vec<u8>,
    /// Regions read from the body so far.
    read_index: u64,
    /// Nothing more to read from the body (its end, or an error, was reached).
    input_done: bool,
    plaintext_len: u64,
    done: bool,
    failed: bool,
}

impl<R: Read> core::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DecryptReader")
            .field("read_index", &self.read_index)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

impl<R: Read> DecryptReader<R> {
    /// A reader over `inner` (the body) for `envelope`, with the unwrapped `dek`; verifies the
    /// integrity record for `object_name` first (required unless `opts` says otherwise).
    pub fn new(
        inner: R,
        envelope: &Envelope,
        dek: &DataKey,
        object_name: &str,
        opts: &OpenOptions,
    ) -> Result<DecryptReader<R>, EnvelopeError> {
        let expected = envelope
            .verify_integrity(dek, object_name, opts)?
            .map(|r| (r.plaintext_length, r.region_count));
        let data_length = envelope.data_length();
        Ok(DecryptReader {
            inner,
            aead: aead_key(dek)?,
            data_length,
            batch: batch_regions(data_length),
            nonces: NonceValidator::new(),
            expected,
            buf: Vec::new(),
            ranges: VecDeque::new(),
            ahead: None,
            spare: Vec::new(),
            read_index: 0,
            input_done: false,
            plaintext_len: 0,
            done: false,
            failed: false,
        })
    }

    /// Plaintext bytes produced so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Reads the next batch of regions (into the spare buffer) and checks their nonces, in
    /// region order.
    fn read_batch(&mut self) -> Batch {
        let slot = (self.data_length + REGION_OVERHEAD) as usize;
        let mut buf = std::mem::take(&mut self.spare);
        let first = self.read_index;
        let mut lens = Vec::with_capacity(self.batch);
        let mut error = None;
        let mut at_end = false;
        let mut off = 0;
        while lens.len() < self.batch {
            let index = first + lens.len() as u64;
            let got = match read_full(&mut self.inner, &mut buf, off, slot) {
                Ok(n) => n,
                Err(e) => {
                    error = Some(EnvelopeError::Io(e));
                    break;
                }
            };
            if got == 0 {
                at_end = true;
                break;
            }
            if got as u64 <= REGION_OVERHEAD {
                error = Some(EnvelopeError::Integrity(format!(
                    "region {index} is truncated ({got} bytes; a region needs at least {} bytes)",
                    REGION_OVERHEAD + 1
                )));
                break;
            }
            // Sequential, so the scheme intersection is order-exact.
            if let Err(e) = self.nonces.check(index, &buf[off..off + NONCE_LEN]) {
                error = Some(e);
                break;
            }
            lens.push(got);
            off += got;
            if got < slot {
                at_end = true;
                break;
            }
        }
        if let Some((_, count)) = self.expected {
            if first + lens.len() as u64 > count {
                lens.truncate(count.saturating_sub(first) as usize);
                error = Some(EnvelopeError::Integrity(format!(
                    "the body has more regions than the {count} the integrity record names"
                )));
            }
        }
        self.read_index = first + lens.len() as u64;
        if at_end || error.is_some() {
            self.input_done = true;
        }
        Batch {
            buf,
            lens,
            first,
            error,
            at_end,
        }
    }

    /// Starts opening a batch: on a worker thread when more follows and it is large enough,
    /// else here.
    fn start(&self, mut batch: Batch) -> Result<Opening, EnvelopeError> {
        let bytes: usize = batch.lens.iter().sum();
        if batch.at_end || batch.error.is_some() || bytes < WORKER_MIN {
            let r = open_regions(&self.aead, &mut batch, crypto_threads(false));
            return Ok(Opening::Ready(batch, r));
        }
        let aead = Arc::clone(&self.aead);
        let handle = std::thread::Builder::new()
            .name("cmkvault-open".into())
            .spawn(move || {
                let r = open_regions(&aead, &mut batch, crypto_threads(true));
                (batch, r)
            })?;
        Ok(Opening::Worker(handle))
    }

    /// Makes the next batch current (opened, its plaintext ranges queued) after reading the
    /// one after it and starting to open that; sets `done` at end of body.
    fn fill(&mut self) -> Result<(), EnvelopeError> {
        let this = match self.ahead.take() {
            Some(o) => o,
            None => {
                let b = self.read_batch();
                self.start(b)?
            }
        };
        // The current buffer has been handed out: read ahead into it.
        self.spare = std::mem::take(&mut self.buf);
        if !self.input_done {
            let next = self.read_batch();
            self.ahead = Some(self.start(next)?);
        }
        let (batch, opened) = match this {
            Opening::Worker(h) => h.join().map_err(|_| worker_failed())?,
            Opening::Ready(b, r) => (b, r),
        };
        opened?;
        let Batch {
            buf,
            lens,
            error,
            at_end,
            ..
        } = batch;
        if let Some(e) = error {
            return Err(e);
        }
        let mut off = 0;
        for len in &lens {
            let pt = len - REGION_OVERHEAD as usize;
            self.ranges
                .push_back((off + NONCE_LEN, off + NONCE_LEN + pt));
            self.plaintext_len += pt as u64;
            off += len;
        }
        self.buf = buf;
        if at_end {
            self.done = true;
            if let Some((len, count)) = self.expected {
                if self.read_index != count || self.plaintext_len != len {
                    self.ranges.clear();
                    return Err(EnvelopeError::Integrity(format!(
                        "the body is truncated or incomplete: {} regions / {} bytes, the \
                         integrity record names {count} regions / {len} bytes",
                        self.read_index, self.plaintext_len
                    )));
                }
            }
        }
        Ok(())
    }

    /// Fills the next batch, remembering a failure.
    fn fill_or_fail(&mut self) -> Result<(), EnvelopeError> {
        let r = self.fill();
        if r.is_err() {
            self.failed = true;
            self.ranges.clear();
            self.ahead = None;
        }
        r
    }

    /// Writes all the remaining plaintext to `w` straight from the region buffers (one copy
    /// fewer than `io::copy`; each region in one `write_all`); returns the bytes written. The
    /// regions of a batch are written while the next batch is being opened.
    pub fn copy_to<W: Write + ?Sized>(&mut self, w: &mut W) -> Result<u64, EnvelopeError> {
        let mut n = 0u64;
        loop {
            if self.failed {
                return Err(EnvelopeError::Integrity(
                    "the object failed to verify earlier".into(),
                ));
            }
            while let Some((a, b)) = self.ranges.pop_front() {
                w.write_all(&self.buf[a..b])?;
                n += (b - a) as u64;
            }
            if self.done {
                return Ok(n);
            }
            self.fill_or_fail()?;
        }
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                EnvelopeError::Integrity("the object failed to verify earlier".into()),
            ));
        }
        loop {
            if let Some((a, b)) = self.ranges.front_mut() {
                let n = (*b - *a).min(out.len());
                out[..n].copy_from_slice(&self.buf[*a..*a + n]);
                *a += n;
                if *a == *b {
                    self.ranges.pop_front();
                }
                return Ok(n);
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            self.fill_or_fail().map_err(to_io)?;
        }
    }
}
