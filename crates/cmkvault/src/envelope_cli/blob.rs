//! Azure Blob targets (`az://CONTAINER/NAME`) for `encrypt`, `decrypt` and `inspect`, through
//! the `object_store` crate. Account and credentials come from its standard environment
//! (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...; for Azurite
//! `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`).
//!
//! Encrypted blobs carry `encryptiondata` (Azure CSE v2, exactly as the Python SDK writes it)
//! and `cmkvaultintegrity` as blob metadata; the body is the v2 body, uploaded in parts of
//! whole regions. An object is bound to `CONTAINER/NAME`.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use cmkvault_envelope::format::{ciphertext_len, REGION_DATA_LEN_V2_0};
use cmkvault_envelope::{DecryptReader, EncryptWriter, Envelope, EnvelopeMetadata, OpenOptions};
use futures::StreamExt;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, WriteMultipart,
};
use tokio::sync::mpsc;

use super::{
    blocking, commit, load_key, progress, temp_for, Counting, DecryptArgs, EncryptArgs, Inspection,
    Keys, REGION_OVERHEAD,
};

/// The URL scheme of Azure Blob targets.
pub(super) const SCHEME: &str = "az://";
/// Fewest regions per uploaded block (2 × (4 MiB + 28 B) ≈ 8 MiB); more for large inputs.
const MIN_REGIONS_PER_PART: u64 = 2;
/// Azure's limit of blocks in a block blob.
const MAX_BLOCKS: u64 = 50_000;
/// Blocks uploading at once.
const UPLOAD_CONCURRENCY: usize = 3;

/// A blob named by `az://CONTAINER/NAME`.
pub(super) struct AzPath {
    container: String,
    name: String,
}

impl AzPath {
    /// Parses `az://CONTAINER/NAME` (a single object: NAME must not be empty or end in `/`).
    pub(super) fn parse(s: &str) -> Result<AzPath> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| anyhow!("{s}: expected az://CONTAINER/NAME"))?;
        match rest.split_once('/') {
            Some((c, n)) if !c.is_empty() && !n.is_empty() && !n.ends_with('/') => Ok(AzPath {
                container: c.to_owned(),
                name: n.to_owned(),
            }),
            _ => bail!("{s}: expected az://CONTAINER/NAME (one object)"),
        }
    }

    /// The object name the integrity record binds: `CONTAINER/NAME`.
    fn object_name(&self) -> String {
        format!("{}/{}", self.container, self.name)
    }

    fn shown(&self) -> String {
        format!("{SCHEME}{}/{}", self.container, self.name)
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        let store = MicrosoftAzureBuilder::from_env()
            .with_container_name(&self.container)
            .build()
            .with_context(|| {
                format!(
                    "{}: cannot configure Azure Blob access (set AZURE_STORAGE_ACCOUNT_NAME and \
                     AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_USE_EMULATOR=true)",
                    self.shown()
                )
            })?;
        Ok(Arc::new(store))
    }

    fn path(&self) -> Result<ObjPath> {
        ObjPath::parse(&self.name).with_context(|| format!("{}: bad blob name", self.shown()))
    }
}

/// Blob metadata attributes for the envelope entries.
fn attributes(meta: &EnvelopeMetadata) -> Attributes {
    let mut attrs = Attributes::new();
    for (k, v) in meta.to_pairs() {
        attrs.insert(Attribute::Metadata(k.into()), v.into());
    }
    attrs
}

/// The envelope entries of a blob's attributes (names matched case-insensitively).
fn envelope_metadata(attrs: &Attributes) -> Result<EnvelopeMetadata> {
    let pairs: Vec<(String, String)> = attrs
        .iter()
        .filter_map(|(k, v)| match k {
            Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
            _ => None,
        })
        .collect();
    Ok(EnvelopeMetadata::from_pairs(&pairs)?)
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

/// `cmkvault encrypt --key KID FILE -o az://CONTAINER/NAME`.
pub(super) async fn encrypt(args: EncryptArgs) -> Result<()> {
    let common = &args.common;
    if common.recursive || common.inputs.len() != 1 {
        bail!("az:// output: give one input file (-r and several inputs are not supported yet)");
    }
    let input = std::path::PathBuf::from(&common.inputs[0]);
    if common.inputs[0].starts_with(SCHEME) {
        bail!(
            "{}: encrypt reads local files only (Azure Blob inputs are not supported)",
            common.inputs[0]
        );
    }
    let dest = AzPath::parse(&common.output)?;
    let shown = dest.shown();
    let size = std::fs::metadata(&input)
        .with_context(|| format!("{}: cannot read", input.display()))?
        .len();
    if !input.is_file() {
        bail!("{}: not a regular file", input.display());
    }
    let store = dest.store()?;
    let path = dest.path()?;
    if !common.force {
        match store.head(&path).await {
            Ok(_) => bail!("{shown}: output exists (use --force to overwrite)"),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(anyhow!("{shown}: {e}")),
        }
    }
    let key = load_key("--key", &args.key).await?;
    let sealing = cmkvault_envelope::SealingKey::new(key.as_ref(), &dest.object_name())
        .await
        .with_context(|| input.display().to_string())?;
    // The metadata must go with the upload's start; the integrity record needs the length.
    let expected = sealing.metadata(size)?;
    let attrs = attributes(&expected);
    // Blocks of whole regions, as few regions as the 50,000-block limit allows.
    let regions = size.div_ceil(REGION_DATA_LEN_V2_0);
    let per_part = regions.div_ceil(MAX_BLOCKS).max(MIN_REGIONS_PER_PART);
    let part = usize::try_from((REGION_DATA_LEN_V2_0 + REGION_OVERHEAD) * per_part)
        .map_err(|_| anyhow!("{}: too large", input.display()))?;
    let total = ciphertext_len(size, REGION_DATA_LEN_V2_0);
    let bar = progress(size, common.quiet);

    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    let shown_in = input.display().to_string();
    let bar2 = bar.clone();
    let producer = blocking(move || {
        let file = std::fs::File::open(&input)
            .with_context(|| format!("{}: cannot open", input.display()))?;
        let sink = PartSender {
            tx,
            buf: Vec::new(),
            part,
        };
        let mut w = EncryptWriter::new(sealing, sink)?;
        std::io::copy(
            &mut Counting {
                inner: file,
                bar: bar2,
            },
            &mut w,
        )
        .map_err(|e| anyhow!("{shown_in}: {e}"))?;
        let (meta, mut sink) = w.finalize().with_context(|| shown_in.clone())?;
        if !sink.buf.is_empty() {
            sink.send_buf()?;
        }
        Ok(meta)
    });

    let upload = async {
        if total <= part as u64 {
            // One request (Put Blob): the whole (small) body.
            let mut body = Vec::with_capacity(total as usize);
            while let Some(b) = rx.recv().await {
                body.extend_from_slice(&b);
            }
            if body.len() as u64 != total {
                bail!("the input changed size while it was read");
            }
            let opts = PutOptions {
                mode: if common.force {
                    PutMode::Overwrite
                } else {
                    PutMode::Create
                },
                attributes: attrs,
                ..PutOptions::default()
            };
            store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            return Ok(());
        }
        let opts = PutMultipartOptions {
            attributes: attrs,
            ..PutMultipartOptions::default()
        };
        let up = store
            .put_multipart_opts(&path, opts)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let mut w = WriteMultipart::new_with_chunk_size(up, part);
        let mut sent = 0u64;
        let res: Result<()> = async {
            while let Some(b) = rx.recv().await {
                sent += b.len() as u64;
                w.wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                w.put(b);
            }
            if sent != total {
                bail!("the input changed size while it was read");
            }
            Ok(())
        }
        .await;
        match res {
            Ok(()) => {
                w.finish().await.map_err(|e| anyhow!("{e}"))?;
                Ok(())
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    };
    // If the producer fails, the channel closes and the uploader sees a short body.
    let (meta, up) = tokio::join!(producer, upload);
    bar.finish_and_clear();
    let meta = meta?;
    if meta != expected {
        // Only possible if the length changed; the upload above already failed then.
        bail!("{shown}: the input changed while it was read");
    }
    up.with_context(|| format!("{shown}: upload failed"))
}

/// A `Read` over body chunks received from the download task.
struct ChunkReader {
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

/// `cmkvault decrypt az://CONTAINER/NAME -o FILE`.
pub(super) async fn decrypt(args: DecryptArgs) -> Result<()> {
    let common = &args.common;
    if common.recursive || common.inputs.len() != 1 {
        bail!("az:// input: give one object (-r and several inputs are not supported yet)");
    }
    if common.output.starts_with(SCHEME) {
        bail!(
            "{}: decrypt writes local files only (Azure Blob outputs are not supported)",
            common.output
        );
    }
    let src = AzPath::parse(&common.inputs[0])?;
    let shown = src.shown();
    let output = std::path::PathBuf::from(&common.output);
    if !common.force && std::fs::symlink_metadata(&output).is_ok() {
        bail!(
            "{}: output exists (use --force to overwrite)",
            output.display()
        );
    }
    let opts = OpenOptions {
        allow_legacy: args.allow_legacy,
        require_integrity: !args.no_integrity,
    };
    let store = src.store()?;
    // One GET: metadata, ETag and body come from the same response (one version of the blob).
    let got = store
        .get_opts(&src.path()?, GetOptions::default())
        .await
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    let meta = envelope_metadata(&got.attributes).with_context(|| shown.clone())?;
    let envelope = Envelope::parse(&meta, &opts).with_context(|| shown.clone())?;
    let mut keys = Keys::new(args.key.as_deref(), &args.allow_key_host).await?;
    let dek = keys
        .unwrap_dek(&envelope)
        .await
        .with_context(|| shown.clone())?;
    let bar = progress(got.meta.size, common.quiet);
    let (tx, rx) = mpsc::channel(4);
    let mut stream = got.into_stream();
    let feed = async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    };
    let name = src.object_name();
    let force = common.force;
    let bar2 = bar.clone();
    let shown2 = shown.clone();
    let work = blocking(move || {
        let reader = ChunkReader {
            rx,
            cur: Bytes::new(),
        };
        let mut plain = DecryptReader::new(
            Counting {
                inner: reader,
                bar: bar2,
            },
            &envelope,
            &dek,
            &name,
            &opts,
        )
        .with_context(|| format!("{shown2} (object name {name:?})"))?;
        let tmp = temp_for(&output)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
        std::io::copy(&mut plain, &mut w).map_err(|e| {
            let inner = e.get_ref().map(|i| i.to_string());
            anyhow!("{shown2}: {}", inner.unwrap_or_else(|| e.to_string()))
        })?;
        let tmp = w
            .into_inner()
            .map_err(|e| anyhow!("{}: cannot write: {}", output.display(), e.error()))?;
        commit(tmp, &output, force)
    });
    let ((), res) = tokio::join!(feed, work);
    bar.finish_and_clear();
    res
}

/// `inspect` of one blob (metadata only, no key access).
pub(super) async fn inspect_one(target: &str) -> Result<Inspection> {
    let src = AzPath::parse(target)?;
    let shown = src.shown();
    let store = src.store()?;
    let got = store
        .get_opts(
            &src.path()?,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    let meta = envelope_metadata(&got.attributes).with_context(|| shown.clone())?;
    super::inspection(shown, &meta, got.meta.size)
}
