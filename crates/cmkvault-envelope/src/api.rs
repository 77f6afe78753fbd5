//! The top-level API: seal and open one object (body streams + metadata), and the `.cmk`
//! container for local files.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::envelope::{Envelope, EnvelopeMetadata, OpenOptions, SealingKey};
use crate::kek::{BoxFuture, KeyEncryptionKey};
use crate::stream::{from_io, DecryptReader, EncryptWriter};
use crate::EnvelopeError;

/// Finds the KEK for a key id (e.g. a vault client that resolves any kid it is given).
pub trait KeyResolver: Send + Sync {
    /// The KEK whose `kid()` is exactly `kid`, or an error naming the key and the cause.
    fn resolve<'a>(
        &'a self,
        kid: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn KeyEncryptionKey>, EnvelopeError>>;
}

/// Where `open` gets its KEK: one given key, or a resolver asked for the envelope's kid.
#[derive(Clone, Copy)]
pub enum KeySource<'a> {
    /// This key (its kid must equal the envelope's `KeyId`).
    Key(&'a dyn KeyEncryptionKey),
    /// Resolve the envelope's `KeyId`.
    Resolver(&'a dyn KeyResolver),
}

impl core::fmt::Debug for KeySource<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeySource::Key(k) => write!(f, "KeySource::Key({})", k.kid()),
            KeySource::Resolver(_) => f.write_str("KeySource::Resolver(..)"),
        }
    }
}

impl KeySource<'_> {
    /// Unwraps the envelope's DEK: one KEK call.
    pub async fn unwrap_dek(
        &self,
        envelope: &Envelope,
    ) -> Result<crate::envelope::DataKey, EnvelopeError> {
        match self {
            KeySource::Key(k) => envelope.unwrap_dek(*k).await,
            KeySource::Resolver(r) => {
                let k = r.resolve(envelope.kid()).await?;
                envelope.unwrap_dek(k.as_ref()).await
            }
        }
    }
}

/// Encrypts `reader` into `writer` (the v2 body) under a fresh DEK wrapped by `kek` (one KEK
/// call), bound to `object_name`; returns the metadata to store beside the body.
///
/// The streaming part is blocking I/O on the caller's thread (regions sealed on all cores);
/// from an async runtime, call it inside `spawn_blocking`, or use [`SealingKey::new`] then
/// [`EncryptWriter`] there.
pub async fn seal<R: Read, W: Write>(
    kek: &dyn KeyEncryptionKey,
    object_name: &str,
    reader: R,
    writer: W,
) -> Result<EnvelopeMetadata, EnvelopeError> {
    let key = SealingKey::new(kek, object_name).await?;
    seal_with(key, reader, writer).map(|(m, _)| m)
}

/// Seals with a prepared key (synchronous): reads `reader` straight into an
/// [`EncryptWriter`]'s regions ([`EncryptWriter::read_from`]).
pub fn seal_with<R: Read, W: Write>(
    key: SealingKey,
    mut reader: R,
    writer: W,
) -> Result<(EnvelopeMetadata, W), EnvelopeError> {
    let mut w = EncryptWriter::new(key, writer)?;
    w.read_from(&mut reader).map_err(from_io)?;
    w.finalize()
}

/// Decrypts a body: parses and validates `metadata`, unwraps the DEK once, verifies the
/// integrity record for `object_name`, then streams every verified region to `writer`.
/// Returns the plaintext length. On error the writer may hold partial output: write to a
/// temporary file and discard it on error (nothing must appear under the final name).
pub async fn open<R: Read, W: Write>(
    key: KeySource<'_>,
    metadata: &EnvelopeMetadata,
    object_name: &str,
    reader: R,
    mut writer: W,
    opts: &OpenOptions,
) -> Result<u64, EnvelopeError> {
    let envelope = Envelope::parse(metadata, opts)?;
    let dek = key.unwrap_dek(&envelope).await?;
    let mut r = DecryptReader::new(reader, &envelope, &dek, object_name, opts)?;
    let n = r.copy_to(&mut writer)?;
    writer.flush()?;
    Ok(n)
}

/// The `.cmk` container's magic bytes.
pub const CONTAINER_MAGIC: &[u8; 8] = b"CMKENV1\n";
/// The container format version written after the magic.
pub const CONTAINER_VERSION: u16 = 1;
/// The largest header accepted (checked before allocating).
pub const MAX_CONTAINER_HEADER: u32 = 64 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
struct ContainerHeader {
    encryptiondata: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmkvaultintegrity: Option<String>,
}

fn header_json(meta: &EnvelopeMetadata) -> Result<Vec<u8>, EnvelopeError> {
    serde_json::to_vec(&ContainerHeader {
        encryptiondata: meta.encryption_data.clone(),
        cmkvaultintegrity: meta.integrity.clone(),
    })
    .map_err(|e| EnvelopeError::Metadata(format!("cannot serialize the container header: {e}")))
}

/// Writes a `.cmk` container header: `CMKENV1\n`, version (u16 BE), header length (u32 BE),
/// the header JSON (padded with spaces to `min_len` bytes if given). The v2 body follows.
pub fn write_container<W: Write>(
    mut w: W,
    meta: &EnvelopeMetadata,
    min_len: Option<usize>,
) -> Result<(), EnvelopeError> {
    let mut json = header_json(meta)?;
    if let Some(min) = min_len {
        if json.len() > min {
            return Err(EnvelopeError::Metadata(
                "container header larger than its reserved space".into(),
            ));
        }
        json.resize(min, b' ');
    }
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= MAX_CONTAINER_HEADER)
        .ok_or_else(|| EnvelopeError::Metadata("container header too large".into()))?;
    // One write (an unbuffered file gets one system call).
    let mut header = Vec::with_capacity(14 + json.len());
    header.extend_from_slice(CONTAINER_MAGIC);
    header.extend_from_slice(&CONTAINER_VERSION.to_be_bytes());
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&json);
    w.write_all(&header)?;
    Ok(())
}

/// Reads a `.cmk` container header, leaving `r` at the start of the v2 body.
pub fn read_container<R: Read>(mut r: R) -> Result<EnvelopeMetadata, EnvelopeError> {
    let mut fixed = [0u8; 14];
    r.read_exact(&mut fixed).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            EnvelopeError::Metadata("not a cmkvault container (file too short)".into())
        }
        _ => EnvelopeError::Io(e),
    })?;
    if &fixed[..8] != CONTAINER_MAGIC {
        return Err(EnvelopeError::Metadata(
            "not a cmkvault container (bad magic)".into(),
        ));
    }
    let version = u16::from_be_bytes([fixed[8], fixed[9]]);
    if version != CONTAINER_VERSION {
        return Err(EnvelopeError::Metadata(format!(
            "container version {version} is not supported (expected {CONTAINER_VERSION})"
        )));
    }
    let len = u32::from_be_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]);
    if len > MAX_CONTAINER_HEADER {
        return Err(EnvelopeError::Metadata(format!(
            "container header of {len} bytes is larger than {MAX_CONTAINER_HEADER}"
        )));
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            EnvelopeError::Metadata("container header is truncated".into())
        }
        _ => EnvelopeError::Io(e),
    })?;
    let h: ContainerHeader = serde_json::from_slice(&json)
        .map_err(|e| EnvelopeError::Metadata(format!("container header is not valid: {e}")))?;
    Ok(EnvelopeMetadata {
        encryption_data: h.encryptiondata,
        integrity: h.cmkvaultintegrity,
    })
}

/// Seals `reader` into a `.cmk` container: reserves the header, streams the body, then seeks
/// back and writes the final header. Returns the metadata.
pub async fn seal_container<R: Read, W: Write + Seek>(
    kek: &dyn KeyEncryptionKey,
    object_name: &str,
    reader: R,
    writer: W,
) -> Result<EnvelopeMetadata, EnvelopeError> {
    let key = SealingKey::new(kek, object_name).await?;
    seal_container_with(key, reader, writer)
}

/// [`seal_container`] with a prepared key (synchronous). An object that fits in the first
/// batch of regions (32 MiB on 8 cores, 8 MiB on 2) is read whole first and its header written
/// once; a larger one gets a header reserved before the body and rewritten after it.
pub fn seal_container_with<R: Read, W: Write + Seek>(
    key: SealingKey,
    mut reader: R,
    mut writer: W,
) -> Result<EnvelopeMetadata, EnvelopeError> {
    let start = writer.stream_position()?;
    // The header with the largest possible numbers is at least as long as the final one.
    let reserve = header_json(&key.metadata(u64::MAX)?)?.len();
    let mut w = EncryptWriter::new(key, &mut writer)?;
    let (_, ended) = w.read_batch_from(&mut reader).map_err(from_io)?;
    if ended {
        // The whole object is in the first batch: the final header, then the body.
        let meta = w.metadata_now()?;
        write_container(w.inner_mut(), &meta, Some(reserve))?;
        w.finalize()?;
        return Ok(meta);
    }
    // More follows: a header of the reserved length now, the final one after the body.
    let provisional = w.metadata_now()?;
    write_container(w.inner_mut(), &provisional, Some(reserve))?;
    w.read_from(&mut reader).map_err(from_io)?;
    let (meta, _) = w.finalize()?;
    let end = writer.stream_position()?;
    writer.seek(SeekFrom::Start(start))?;
    write_container(&mut writer, &meta, Some(reserve))?;
    writer.seek(SeekFrom::Start(end))?;
    writer.flush()?;
    Ok(meta)
}

/// Opens a `.cmk` container: reads its header, then [`open`]s the body into `writer`.
pub async fn open_container<R: Read, W: Write>(
    key: KeySource<'_>,
    object_name: &str,
    mut reader: R,
    writer: W,
    opts: &OpenOptions,
) -> Result<u64, EnvelopeError> {
    let meta = read_container(&mut reader)?;
    open(key, &meta, object_name, reader, writer, opts).await
}

/// Re-wraps an object's DEK under `new_kek` without touching its body: unwraps once with `key`,
/// verifies the integrity record for `object_name` (if present; required unless `opts` says
/// otherwise), wraps `pad8(protocol) ‖ DEK` with `new_kek`, and returns the new metadata (a new
/// integrity record binding the new wrapped key; none if the object had none).
pub async fn rewrap(
    key: KeySource<'_>,
    new_kek: &dyn KeyEncryptionKey,
    metadata: &EnvelopeMetadata,
    object_name: &str,
    opts: &OpenOptions,
) -> Result<EnvelopeMetadata, EnvelopeError> {
    let envelope = Envelope::parse(metadata, opts)?;
    let dek = key.unwrap_dek(&envelope).await?;
    let record = envelope.verify_integrity(&dek, object_name, opts)?.cloned();
    let sealing = SealingKey::rewrapped(
        new_kek,
        object_name,
        dek,
        envelope.protocol(),
        envelope.data_length(),
    )
    .await?;
    match record {
        Some(rec) => sealing.metadata(rec.plaintext_length),
        None => Ok(EnvelopeMetadata {
            encryption_data: sealing.metadata(0)?.encryption_data,
            integrity: None,
        }),
    }
}
