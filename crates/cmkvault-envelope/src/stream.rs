//! Streaming encryption and decryption of a v2 body, a batch of regions at a time, sealed and
//! opened on all cores.

use std::io::{self, Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::envelope::{DataKey, Envelope, EnvelopeMetadata, OpenOptions, SealingKey};
use crate::format::{python_nonce, NonceValidator, NONCE_LEN, REGION_OVERHEAD, TAG_LEN};
use crate::EnvelopeError;

/// Regions per batch: one per core, at most 8 (memory ≈ 2 × batch × region size).
fn batch_regions(data_length: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if data_length >= 64 * 1024 * 1024 {
        1
    } else {
        cores.clamp(1, 8)
    }
}

fn aead_key(dek: &DataKey) -> Result<LessSafeKey, EnvelopeError> {
    UnboundKey::new(&AES_256_GCM, &dek.0[..])
        .map(LessSafeKey::new)
        .map_err(|_| EnvelopeError::Crypto("AES-256-GCM key setup failed".into()))
}

/// Runs `f(i, region)` on every region, on several threads when the batch is large enough; the
/// first error in region order wins.
fn for_each_region<F>(regions: Vec<&mut [u8]>, f: F) -> Result<(), EnvelopeError>
where
    F: Fn(usize, &mut [u8]) -> Result<(), EnvelopeError> + Sync,
{
    let total: usize = regions.iter().map(|r| r.len()).sum();
    if regions.len() <= 1 || total < 256 * 1024 {
        for (i, r) in regions.into_iter().enumerate() {
            f(i, r)?;
        }
        return Ok(());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(regions.len());
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
    let results: Vec<Result<(), EnvelopeError>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    for (i, r) in g {
                        f(i, r)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EnvelopeError::Crypto(
                        "a region worker thread failed".into(),
                    ))
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Encrypts a stream into a v2 body: `std::io::Write` the plaintext, then [`Self::finalize`]
/// to seal the last region and get the metadata. Memory: one batch of regions.
pub struct EncryptWriter<W: Write> {
    inner: W,
    key: SealingKey,
    aead: LessSafeKey,
    /// Region slots (`nonce ‖ plaintext ‖ tag space`), filled in order.
    buf: Vec<u8>,
    /// Plaintext bytes in the current (last) slot.
    cur: usize,
    /// Slots in use (the current one included once it has a byte).
    slots: usize,
    batch: usize,
    next_index: u64,
    plaintext_len: u64,
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
        })
    }

    fn slot_len(&self) -> usize {
        self.key.data_length as usize + REGION_OVERHEAD as usize
    }

    /// Seals the slots in use (all full except possibly the last) and writes them out.
    fn flush_slots(&mut self) -> Result<(), EnvelopeError> {
        if self.slots == 0 {
            return Ok(());
        }
        let slot_len = self.slot_len();
        let d = self.key.data_length as usize;
        let last_len = if self.cur == 0 { d } else { self.cur };
        let n = self.slots;
        let first = self.next_index;
        let used = (n - 1) * slot_len + NONCE_LEN + last_len + TAG_LEN;
        let aead = &self.aead;
        let regions: Vec<&mut [u8]> = self.buf[..used].chunks_mut(slot_len).collect();
        for_each_region(regions, |i, region| {
            let len = region.len() - NONCE_LEN - TAG_LEN;
            let nonce = python_nonce(first + i as u64);
            region[..NONCE_LEN].copy_from_slice(&nonce);
            let (body, tag_space) = region[NONCE_LEN..].split_at_mut(len);
            let tag = aead
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), body)
                .map_err(|_| EnvelopeError::Crypto("AES-256-GCM seal failed".into()))?;
            tag_space.copy_from_slice(tag.as_ref());
            Ok(())
        })?;
        self.inner.write_all(&self.buf[..used])?;
        self.next_index += n as u64;
        self.slots = 0;
        self.cur = 0;
        Ok(())
    }

    /// Seals what remains, flushes, and returns the metadata (`encryptiondata` + integrity
    /// record) and the inner writer.
    pub fn finalize(mut self) -> Result<(EnvelopeMetadata, W), EnvelopeError> {
        self.flush_slots()?;
        self.inner.flush()?;
        let meta = self.key.metadata(self.plaintext_len)?;
        Ok((meta, self.inner))
    }

    /// Plaintext bytes written so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
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
                    self.flush_slots().map_err(to_io)?;
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

/// Decrypts a v2 body: `std::io::Read` yields plaintext; every region is authenticated and its
/// nonce checked against its position before any of its bytes are returned; at end of body the
/// integrity record's length and region count are checked. Any failure is an
/// `io::ErrorKind::InvalidData` error carrying an [`EnvelopeError`] — never short data.
pub struct DecryptReader<R: Read> {
    inner: R,
    aead: LessSafeKey,
    data_length: u64,
    batch: usize,
    nonces: NonceValidator,
    /// Expected (plaintext length, region count) from a verified integrity record.
    expected: Option<(u64, u64)>,
    buf: Vec<u8>,
    /// Plaintext ranges of `buf` still to hand out.
    ranges: std::collections::VecDeque<(usize, usize)>,
    next_index: u64,
    plaintext_len: u64,
    done: bool,
    failed: bool,
}

impl<R: Read> core::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DecryptReader")
            .field("next_index", &self.next_index)
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
            ranges: Default::default(),
            next_index: 0,
            plaintext_len: 0,
            done: false,
            failed: false,
        })
    }

    /// Plaintext bytes produced so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Reads and opens the next batch of regions; sets `done` at end of body.
    fn fill(&mut self) -> Result<(), EnvelopeError> {
        let slot = self.data_length + REGION_OVERHEAD;
        self.buf.clear();
        let mut lens = Vec::new();
        let mut at_end = false;
        for _ in 0..self.batch {
            let before = self.buf.len();
            let got = (&mut self.inner).take(slot).read_to_end(&mut self.buf)? as u64;
            if got == 0 {
                at_end = true;
                break;
            }
            if got <= REGION_OVERHEAD {
                self.buf.truncate(before);
                return Err(EnvelopeError::Integrity(format!(
                    "region {} is truncated ({got} bytes; a region needs at least {} bytes)",
                    self.next_index + lens.len() as u64,
                    REGION_OVERHEAD + 1
                )));
            }
            lens.push(got as usize);
            if got < slot {
                at_end = true;
                break;
            }
        }
        let first = self.next_index;
        if let Some((_, count)) = self.expected {
            if first + lens.len() as u64 > count {
                return Err(EnvelopeError::Integrity(format!(
                    "the body has more regions than the {count} the integrity record names"
                )));
            }
        }
        // Nonce positions (sequential, so the scheme intersection is order-exact). On a bad
        // nonce the regions before it are still opened first, so errors come in region order.
        let mut nonce_err = None;
        let mut off = 0;
        for (i, len) in lens.iter().enumerate() {
            if let Err(e) = self
                .nonces
                .check(first + i as u64, &self.buf[off..off + NONCE_LEN])
            {
                nonce_err = Some(e);
                lens.truncate(i);
                break;
            }
            off += len;
        }
        let mut regions: Vec<&mut [u8]> = Vec::with_capacity(lens.len());
        let mut rest = &mut self.buf[..];
        for len in &lens {
            let (r, tail) = rest.split_at_mut(*len);
            regions.push(r);
            rest = tail;
        }
        let aead = &self.aead;
        for_each_region(regions, |i, region| {
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
        })?;
        if let Some(e) = nonce_err {
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
        self.next_index += lens.len() as u64;
        if at_end {
            self.done = true;
            if let Some((len, count)) = self.expected {
                if self.next_index != count || self.plaintext_len != len {
                    return Err(EnvelopeError::Integrity(format!(
                        "the body is truncated or incomplete: {} regions / {} bytes, the \
                         integrity record names {count} regions / {len} bytes",
                        self.next_index, self.plaintext_len
                    )));
                }
            }
        }
        Ok(())
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
            if let Err(e) = self.fill() {
                self.failed = true;
                self.ranges.clear();
                return Err(to_io(e));
            }
        }
    }
}
