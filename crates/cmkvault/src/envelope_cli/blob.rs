//! Azure Blob targets (`az://CONTAINER/NAME`, `az://CONTAINER[/PREFIX]` with `-r`) for the
//! envelope commands, through the `object_store` crate. Account and credentials come from its
//! standard environment (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...; for
//! Azurite `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`).
//!
//! Encrypted blobs carry `encryptiondata` (Azure CSE v2, exactly as the Python SDK writes it)
//! and `cmkvaultintegrity` as blob metadata; the body is the v2 body, uploaded in parts of
//! whole regions. An object is bound to `CONTAINER/NAME`. Blob names get no `.cmk` suffix (Azure
//! SDK readers expect the plaintext's name); encrypted blobs are told apart by their
//! `encryptiondata` metadata. `rewrap` replaces the metadata with Set Blob Metadata
//! (`metadata`), conditioned on the ETag the old metadata came with.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use cmkvault_envelope::format::{ciphertext_len, REGION_DATA_LEN_V2_0};
use cmkvault_envelope::{EncryptWriter, EnvelopeMetadata, SealingKey};
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, GetOptions, GetResult, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};
use tokio::sync::mpsc;

use super::{blocking, Counting, REGION_OVERHEAD};

mod metadata;

/// The URL scheme of Azure Blob targets.
pub(super) const SCHEME: &str = "az://";
/// Fewest regions per uploaded block (2 × (4 MiB + 28 B) ≈ 8 MiB); more for large inputs.
const MIN_REGIONS_PER_PART: u64 = 2;
/// Azure's limit of blocks in a block blob.
const MAX_BLOCKS: u64 = 50_000;
/// Blocks uploading at once.
const UPLOAD_CONCURRENCY: usize = 3;
/// HEAD requests in flight at once when a prefix is listed.
const HEAD_CONCURRENCY: usize = 8;

/// One line for an `object_store` error: its first line without the XML body Azure sends, and
/// Azure's error code from that body.
fn one_line(e: &object_store::Error) -> String {
    let text = e.to_string();
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next());
    let head = text.split("<?xml").next().unwrap_or_default();
    let head = head.lines().next().unwrap_or_default();
    let head = head.trim_end_matches([' ', ':']);
    match code {
        Some(code) => format!("{head} ({code})"),
        None => head.to_owned(),
    }
}

/// Whether a command-line argument names Azure Blob storage.
pub(super) fn is_az(arg: &str) -> bool {
    arg.starts_with(SCHEME)
}

/// A blob named by `az://CONTAINER/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AzPath {
    container: String,
    name: String,
}

impl AzPath {
    /// Parses `az://CONTAINER/NAME` (a single object: NAME must not be empty or end in `/`).
    pub(super) fn parse(s: &str) -> Result<AzPath> {
        let p = AzPrefix::parse(s)?;
        if p.prefix.is_empty() || s.ends_with('/') {
            bail!("{s}: expected az://CONTAINER/NAME (one object)");
        }
        Ok(AzPath {
            container: p.container,
            name: p.prefix,
        })
    }

    /// The object name the integrity record binds: `CONTAINER/NAME`.
    pub(super) fn object_name(&self) -> String {
        format!("{}/{}", self.container, self.name)
    }

    /// `az://CONTAINER/NAME`.
    pub(super) fn shown(&self) -> String {
        format!("{SCHEME}{}/{}", self.container, self.name)
    }

    /// The last segment of the name (what a single object is called below an output directory).
    fn base_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    fn path(&self) -> Result<ObjPath> {
        ObjPath::parse(&self.name).with_context(|| format!("{}: bad blob name", self.shown()))
    }
}

/// `az://CONTAINER[/PREFIX]`: a container and a prefix (no leading or trailing `/`; empty for
/// the whole container).
#[derive(Clone, Debug)]
pub(super) struct AzPrefix {
    container: String,
    prefix: String,
}

impl AzPrefix {
    /// Parses `az://CONTAINER[/PREFIX][/]`.
    pub(super) fn parse(s: &str) -> Result<AzPrefix> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| anyhow!("{s}: expected az://CONTAINER[/PREFIX]"))?;
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if container.is_empty() || prefix.starts_with('/') || prefix.contains("//") {
            bail!("{s}: expected az://CONTAINER[/PREFIX]");
        }
        Ok(AzPrefix {
            container: container.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The blob `rel` below the prefix.
    pub(super) fn child(&self, rel: &str) -> AzPath {
        let name = if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        AzPath {
            container: self.container.clone(),
            name,
        }
    }

    fn shown(&self) -> String {
        format!("{SCHEME}{}/{}", self.container, self.prefix)
    }

    /// The prefix as a listing prefix (none for the whole container).
    fn list_prefix(&self) -> Result<Option<ObjPath>> {
        if self.prefix.is_empty() {
            return Ok(None);
        }
        let p = ObjPath::parse(&self.prefix)
            .with_context(|| format!("{}: bad blob prefix", self.shown()))?;
        Ok(Some(p))
    }
}

/// Object stores by container, configured from the environment once each, and the Set Blob
/// Metadata client (made on first use).
#[derive(Default)]
pub(super) struct Stores {
    stores: HashMap<String, Arc<dyn ObjectStore>>,
    metadata: Option<metadata::MetadataClient>,
}

impl Stores {
    fn get(&mut self, container: &str) -> Result<Arc<dyn ObjectStore>> {
        if let Some(s) = self.stores.get(container) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .build()
                .with_context(|| {
                    format!(
                        "{SCHEME}{container}: cannot configure Azure Blob access (set \
                         AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or \
                         AZURE_STORAGE_USE_EMULATOR=true)"
                    )
                })?,
        );
        self.stores.insert(container.to_owned(), store.clone());
        Ok(store)
    }

    fn metadata_client(&mut self) -> Result<&metadata::MetadataClient> {
        if self.metadata.is_none() {
            self.metadata = Some(metadata::MetadataClient::from_env()?);
        }
        self.metadata
            .as_ref()
            .ok_or_else(|| anyhow!("no metadata client"))
    }
}

/// A blob a target names, with what its HEAD said: size, ETag, metadata.
pub(super) struct Found {
    /// The blob.
    pub(super) az: AzPath,
    /// Its name relative to the target (a single object: the last segment of its name).
    pub(super) rel: String,
    /// Its body size.
    pub(super) size: u64,
    e_tag: Option<String>,
    attrs: Attributes,
}

impl Found {
    /// Its envelope metadata (an error naming the blob if it is not encrypted).
    pub(super) fn envelope(&self) -> Result<EnvelopeMetadata> {
        envelope_metadata(&self.attrs).with_context(|| self.az.shown())
    }

    fn is_encrypted(&self) -> bool {
        metadata_pairs(&self.attrs)
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(cmkvault_envelope::format::ENCRYPTION_DATA_NAME))
    }
}

/// The blob metadata of `attrs` as (name, value) pairs.
fn metadata_pairs(attrs: &Attributes) -> Vec<(String, String)> {
    attrs
        .iter()
        .filter_map(|(k, v)| match k {
            Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
            _ => None,
        })
        .collect()
}

/// The envelope entries of a blob's attributes (names matched case-insensitively).
fn envelope_metadata(attrs: &Attributes) -> Result<EnvelopeMetadata> {
    Ok(EnvelopeMetadata::from_pairs(&metadata_pairs(attrs))?)
}

/// HEAD of one blob (`rel` is the name it is known by relative to its target); `None` if there
/// is no such blob.
async fn head(store: &dyn ObjectStore, az: AzPath, rel: String) -> Result<Option<Found>> {
    let opts = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let got = match store.get_opts(&az.path()?, opts).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => bail!("{}: {}", az.shown(), one_line(&e)),
    };
    Ok(Some(Found {
        rel,
        size: got.meta.size,
        e_tag: got.meta.e_tag.clone(),
        attrs: got.attributes,
        az,
    }))
}

/// The one blob `target` names (`missing`: what to say if there is none).
async fn find_one(stores: &mut Stores, target: &str, missing: &str) -> Result<Found> {
    let az = AzPath::parse(target)?;
    let store = stores.get(&az.container)?;
    let rel = az.base_name().to_owned();
    head(store.as_ref(), az, rel)
        .await?
        .ok_or_else(|| anyhow!("{target}: {missing}"))
}

/// The blobs `target` names. Without `recursive`: the one object `az://CONTAINER/NAME`. With
/// `recursive`: the encrypted blobs below `PREFIX/` (sorted, names relative to it; blobs without
/// `encryptiondata` skipped), or, if no blob at all is below it, the object `PREFIX` itself.
pub(super) async fn find(stores: &mut Stores, target: &str, recursive: bool) -> Result<Vec<Found>> {
    if !recursive {
        return Ok(vec![find_one(stores, target, "no such blob").await?]);
    }
    let prefix = AzPrefix::parse(target)?;
    let store = stores.get(&prefix.container)?;
    let names = list(store.as_ref(), &prefix).await?;
    if names.is_empty() {
        if prefix.prefix.is_empty() || target.ends_with('/') {
            bail!("{target}: no blobs below this prefix");
        }
        let missing = "no blobs below this prefix, and no blob of this name";
        return Ok(vec![find_one(stores, target, missing).await?]);
    }
    let heads = futures::stream::iter(names.into_iter().map(|rel| {
        let store = store.clone();
        let az = prefix.child(&rel);
        async move { head(store.as_ref(), az, rel).await }
    }))
    .buffered(HEAD_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    // A blob deleted between the listing and its HEAD is no longer there: skipped.
    Ok(heads
        .into_iter()
        .flatten()
        .filter(Found::is_encrypted)
        .collect())
}

/// The names of the blobs below `prefix/`, relative to it, sorted.
async fn list(store: &dyn ObjectStore, prefix: &AzPrefix) -> Result<Vec<String>> {
    let lp = prefix.list_prefix()?;
    let metas: Vec<_> = store
        .list(lp.as_ref())
        .try_collect()
        .await
        .map_err(|e| anyhow!("{}: cannot list: {}", prefix.shown(), one_line(&e)))?;
    let strip = if prefix.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.prefix)
    };
    let mut names: Vec<String> = metas
        .iter()
        .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_owned))
        .filter(|rel| !rel.is_empty())
        .collect();
    names.sort();
    Ok(names)
}

/// Refuses outputs that exist: the blobs of `outputs`, checked with one listing of `dir` when
/// they are written below an output prefix, else with a HEAD each.
pub(super) async fn refuse_existing(
    stores: &mut Stores,
    outputs: &[&AzPath],
    dir: Option<&AzPrefix>,
) -> Result<()> {
    let exists = |az: &AzPath| anyhow!("{}: output exists (use --force to overwrite)", az.shown());
    if let Some(dir) = dir {
        let store = stores.get(&dir.container)?;
        let present: HashSet<String> = list(store.as_ref(), dir)
            .await?
            .into_iter()
            .map(|rel| dir.child(&rel).name)
            .collect();
        if let Some(az) = outputs.iter().find(|az| present.contains(&az.name)) {
            return Err(exists(az));
        }
        return Ok(());
    }
    for az in outputs {
        let store = stores.get(&az.container)?;
        match store.head(&az.path()?).await {
            Ok(_) => return Err(exists(az)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => bail!("{}: {}", az.shown(), one_line(&e)),
        }
    }
    Ok(())
}

/// Blob metadata attributes for the envelope entries.
fn attributes(meta: &EnvelopeMetadata) -> Attributes {
    let mut attrs = Attributes::new();
    for (k, v) in meta.to_pairs() {
        attrs.insert(Attribute::Metadata(k.into()), v.into());
    }
    attrs
}

/// A `Write` that cuts the ciphertext into parts of `part` bytes sent over a channel.
struct PartSender {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    part: usize,
}

impl PartSender {
    fn send_buf(&mut self) -> std::io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part));
        self.tx
            .blocking_send(Bytes::from(full))
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for PartSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = (self.part - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.part {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One upload: the local input, its size, the destination.
pub(super) struct Upload<'a> {
    /// The plaintext file.
    pub(super) input: PathBuf,
    /// Its size when the jobs were planned.
    pub(super) size: u64,
    /// The blob to write (the sealing key must bind its object name).
    pub(super) dest: &'a AzPath,
    /// Overwrite an existing blob.
    pub(super) force: bool,
}

/// Encrypts a local file into a blob: the metadata goes with the upload's start (the integrity
/// record is computed from the size), the body in blocks of whole regions.
pub(super) async fn upload(
    stores: &mut Stores,
    sealing: SealingKey,
    job: Upload<'_>,
    bar: &ProgressBar,
) -> Result<()> {
    let shown = job.dest.shown();
    let store = stores.get(&job.dest.container)?;
    let path = job.dest.path()?;
    let expected = sealing.metadata(job.size)?;
    let attrs = attributes(&expected);
    // Blocks of whole regions, as few regions as the 50,000-block limit allows.
    let regions = job.size.div_ceil(REGION_DATA_LEN_V2_0);
    let per_part = regions.div_ceil(MAX_BLOCKS).max(MIN_REGIONS_PER_PART);
    let part = usize::try_from((REGION_DATA_LEN_V2_0 + REGION_OVERHEAD) * per_part)
        .map_err(|_| anyhow!("{}: too large", job.input.display()))?;
    let total = ciphertext_len(job.size, REGION_DATA_LEN_V2_0);
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let producer = produce(sealing, job.input, part, tx, bar.clone());
    let sink = async {
        if total <= part as u64 {
            put_whole(store.as_ref(), &path, rx, total, attrs, job.force).await
        } else {
            put_blocks(store.as_ref(), &path, rx, total, attrs, part).await
        }
    };
    // If the producer fails, the channel closes and the uploader sees a short body.
    let (meta, up) = tokio::join!(producer, sink);
    if meta? != expected {
        // Only possible if the length changed; the upload above already failed then.
        bail!("{shown}: the input changed while it was read");
    }
    up.with_context(|| format!("{shown}: upload failed"))
}

/// Encrypts `input` on the blocking pool, sending parts of `part` bytes to `tx`.
async fn produce(
    sealing: SealingKey,
    input: PathBuf,
    part: usize,
    tx: mpsc::Sender<Bytes>,
    bar: ProgressBar,
) -> Result<EnvelopeMetadata> {
    blocking(move || {
        let shown = input.display().to_string();
        let file = std::fs::File::open(&input).with_context(|| format!("{shown}: cannot open"))?;
        let sink = PartSender {
            tx,
            buf: Vec::new(),
            part,
        };
        let mut w = EncryptWriter::new(sealing, sink)?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, Counting { inner: file, bar });
        std::io::copy(&mut r, &mut w).map_err(|e| anyhow!("{shown}: {e}"))?;
        let (meta, mut sink) = w.finalize().with_context(|| shown.clone())?;
        if !sink.buf.is_empty() {
            sink.send_buf()?;
        }
        Ok(meta)
    })
    .await
}

/// One Put Blob with the whole (small) body; `Create` mode unless `force`.
async fn put_whole(
    store: &dyn ObjectStore,
    path: &ObjPath,
    mut rx: mpsc::Receiver<Bytes>,
    total: u64,
    attributes: Attributes,
    force: bool,
) -> Result<()> {
    let mut body = Vec::with_capacity(total as usize);
    while let Some(b) = rx.recv().await {
        body.extend_from_slice(&b);
    }
    if body.len() as u64 != total {
        bail!("the input changed size while it was read");
    }
    let mode = if force {
        PutMode::Overwrite
    } else {
        PutMode::Create
    };
    let opts = PutOptions {
        mode,
        attributes,
        ..PutOptions::default()
    };
    match store.put_opts(path, PutPayload::from(body), opts).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            bail!("output exists (use --force to overwrite)")
        }
        Err(e) => Err(anyhow!("{}", one_line(&e))),
    }
}

/// A block upload (Put Block + Put Block List) of parts of `part` bytes.
async fn put_blocks(
    store: &dyn ObjectStore,
    path: &ObjPath,
    mut rx: mpsc::Receiver<Bytes>,
    total: u64,
    attributes: Attributes,
    part: usize,
) -> Result<()> {
    let opts = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let up = store
        .put_multipart_opts(path, opts)
        .await
        .map_err(|e| anyhow!("{}", one_line(&e)))?;
    let mut w = WriteMultipart::new_with_chunk_size(up, part);
    let mut sent = 0u64;
    let res: Result<()> = async {
        while let Some(b) = rx.recv().await {
            sent += b.len() as u64;
            w.wait_for_capacity(UPLOAD_CONCURRENCY)
                .await
                .map_err(|e| anyhow!("{}", one_line(&e)))?;
            w.put(b);
        }
        if sent != total {
            bail!("the input changed size while it was read");
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => w
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| anyhow!("{}", one_line(&e))),
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}

/// A `Read` over body chunks received from the download task.
pub(super) struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Opens a blob for decryption: one GET, so metadata and body come from the same response (one
/// version of the blob). The body streams from a task into the returned reader (read it on the
/// blocking pool); dropping the reader stops the download.
pub(super) async fn open(
    stores: &mut Stores,
    az: &AzPath,
) -> Result<(EnvelopeMetadata, ChunkReader)> {
    let shown = az.shown();
    let store = stores.get(&az.container)?;
    let got: GetResult = store
        .get_opts(&az.path()?, GetOptions::default())
        .await
        .map_err(|e| anyhow!("{shown}: {}", one_line(&e)))?;
    let meta = envelope_metadata(&got.attributes).with_context(|| shown.clone())?;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = got.into_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(|e| std::io::Error::other(one_line(&e)));
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let reader = ChunkReader {
        rx,
        cur: Bytes::new(),
    };
    Ok((meta, reader))
}

/// The metadata set that replaces `old` after a rewrap: every entry of `old` except the
/// envelope's own (any case), then the new envelope entries.
fn merged(old: &Attributes, new: &EnvelopeMetadata) -> Vec<(String, String)> {
    let ours = new.to_pairs();
    let is_ours = |k: &str| {
        [
            cmkvault_envelope::format::ENCRYPTION_DATA_NAME,
            cmkvault_envelope::format::INTEGRITY_NAME,
        ]
        .iter()
        .any(|n| k.eq_ignore_ascii_case(n))
    };
    let mut out: Vec<(String, String)> = metadata_pairs(old)
        .into_iter()
        .filter(|(k, _)| !is_ours(k))
        .collect();
    out.sort();
    out.extend(ours);
    out
}

/// Replaces a found blob's envelope metadata with `new` (user metadata kept) by Set Blob
/// Metadata conditioned on the ETag of the HEAD that `found` came from; the body is not sent.
pub(super) async fn replace_metadata(
    stores: &mut Stores,
    found: &Found,
    new: &EnvelopeMetadata,
) -> Result<()> {
    let shown = found.az.shown();
    let Some(etag) = found.e_tag.as_deref() else {
        bail!("{shown}: the blob has no ETag; cannot update it conditionally");
    };
    let client = stores.metadata_client().with_context(|| shown.clone())?;
    client
        .set(
            &found.az.container,
            &found.az.name,
            etag,
            &merged(&found.attrs, new),
        )
        .await
        .with_context(|| shown.clone())
}

#[cfg(test)]
mod tests {
    // Test code may unwrap: a panic is a test failure with its message.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn prefixes_and_objects_parse() {
        let p = AzPrefix::parse("az://c/a/b/").unwrap();
        assert_eq!((p.container.as_str(), p.prefix.as_str()), ("c", "a/b"));
        assert_eq!(p.child("x/y").object_name(), "c/a/b/x/y");
        let p = AzPrefix::parse("az://c").unwrap();
        assert_eq!(p.child("x").object_name(), "c/x");
        for bad in ["az://", "az:///x", "az://c//x", "c/x"] {
            assert!(AzPrefix::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(AzPath::parse("az://c/d/n").unwrap().base_name(), "n");
        for bad in ["az://c", "az://c/", "az://c/d/"] {
            assert!(AzPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merged_metadata_keeps_user_entries_and_replaces_ours() {
        let mut old = Attributes::new();
        for (k, v) in [
            ("EncryptionData", "old"),
            ("cmkvaultintegrity", "old"),
            ("owner", "team-a"),
        ] {
            old.insert(Attribute::Metadata(k.into()), v.into());
        }
        let new = EnvelopeMetadata {
            encryption_data: "new-ed".into(),
            integrity: Some("new-int".into()),
        };
        assert_eq!(
            merged(&old, &new),
            vec![
                ("owner".to_string(), "team-a".to_string()),
                ("encryptiondata".to_string(), "new-ed".to_string()),
                ("cmkvaultintegrity".to_string(), "new-int".to_string()),
            ]
        );
    }
}
