//! `cmkvault encrypt`, `decrypt`, `inspect`, `shred-report` and `rewrap`: envelope encryption
//! of local files and directories into `.cmk` containers, and of Azure blobs (`blob`; see
//! `docs/envelope-format.md`).
//!
//! Object names: every file is bound (in its integrity record) to its path relative to the
//! input root, `/`-separated: for a file given on the command line, its file name; for a file
//! found below a directory given with `-r`, its path below that directory. Decrypt applies the
//! same rule to the `.cmk` path with `.cmk` stripped, so a renamed or moved file fails. A blob
//! is bound to `CONTAINER/NAME`, wherever it came from.
//!
//! Each command first plans (inputs expanded, outputs named, existing outputs refused), then
//! handles one object at a time with steps shared by files and blobs: `decrypt_job`,
//! `Rewrapper::rewrap`, `inspection`.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use cmkvault_envelope::format::REGION_DATA_LEN_V2_0;
use cmkvault_envelope::{
    read_container, seal_container_with, write_container, DataKey, DecryptReader, Envelope,
    EnvelopeMetadata, KeyEncryptionKey, KeySource, LocalKey, OpenOptions, RemoteKey,
    RemoteKeyConfig, SealingKey,
};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

mod blob;

use blob::{AzPath, AzPrefix, Stores};

/// The suffix of encrypted files.
const SUFFIX: &str = ".cmk";
/// Bytes a v2 region adds to its plaintext (nonce and tag).
const REGION_OVERHEAD: u64 = 12 + 16;
/// The vault URL used to decide which key hosts are trusted when `CMKVAULT_URL` is unset.
const DEFAULT_URL: &str = "https://localhost:8443";

/// `cmkvault encrypt`.
#[derive(Args)]
#[command(after_help = "\
OUTPUT is the output file for a single input, and a directory when -r is given or there are \
several inputs: files given on the command line go to OUTPUT/NAME.cmk, files below a directory \
given with -r to OUTPUT/RELATIVE/PATH.cmk (the directory's contents go directly below OUTPUT).

OUTPUT may be az://CONTAINER/NAME (one input) or az://CONTAINER/PREFIX (-r or several inputs): \
blobs PREFIX/NAME or PREFIX/RELATIVE/PATH, without a suffix (Azure SDK readers expect the \
plaintext's name), bound to CONTAINER/NAME, with encryptiondata metadata as the Azure SDKs \
write it. Account and credentials: AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY \
(or object_store's other AZURE_* settings), or AZURE_STORAGE_USE_EMULATOR=true for Azurite.

Each file is bound to its object name: its path relative to the input root (for a file given \
on the command line, its file name). `decrypt` derives the name the same way from the .cmk \
path with .cmk stripped, so a file renamed or moved after encryption fails to decrypt.

KID: https://HOST[:PORT]/keys/NAME[/VERSION] (a vault key; credentials from CMKVAULT_TOKEN or \
AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, CA from CMKVAULT_CA) or file:PATH (a \
private JWK file, for offline use).")]
pub(crate) struct EncryptArgs {
    /// The key-encryption key: a key id URL or file:PATH (see below).
    #[arg(long, value_name = "KID")]
    key: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// `cmkvault decrypt`.
#[derive(Args)]
#[command(after_help = "\
OUTPUT is the output file for a single input, and a directory when -r is given or there are \
several inputs (relative paths kept below it, .cmk stripped). Directories are searched for \
*.cmk files.

INPUT may be az://CONTAINER/NAME (one blob; below OUTPUT as NAME's last segment) or, with -r, \
az://CONTAINER/PREFIX: the blobs below PREFIX/ that carry encryptiondata (others are skipped), \
relative paths kept below OUTPUT; a blob is checked against CONTAINER/NAME. Local and az:// \
inputs may be mixed; OUTPUT is local.

Each file is checked against its object name: its path relative to the input root with .cmk \
stripped (for a file given on the command line, its file name), the rule `encrypt` used; a \
renamed or moved file fails.

The key: the KeyId recorded in each file. With --key https://…/keys/NAME, files wrapped under \
any version of that key are opened over the same connection. Without --key, a recorded https \
KeyId is used only if its HOST:PORT is the one of CMKVAULT_URL (default https://localhost:8443) \
or is named by --allow-key-host (so a crafted file cannot send your token elsewhere). Files \
wrapped under a local key file need --key file:PATH.")]
pub(crate) struct DecryptArgs {
    /// The key-encryption key: a key id URL or file:PATH (default: the file's recorded KeyId).
    #[arg(long, value_name = "KID")]
    key: Option<String>,
    /// Also trust KeyIds on this HOST[:PORT] (repeatable; port 443 if omitted).
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_key_host: Vec<String>,
    /// Accept data keys wrapped with RSA1_5 (legacy data only).
    #[arg(long)]
    allow_legacy: bool,
    /// Accept objects without a cmkvault integrity record: only for objects written by other
    /// tools (an Azure SDK); truncation at a region boundary and renames are then undetectable.
    #[arg(long)]
    no_integrity: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Flags shared by encrypt and decrypt.
#[derive(Args)]
struct CommonArgs {
    /// Encrypt or decrypt the files below directory inputs.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Input files or az:// blobs (directories or az://CONTAINER/PREFIX with -r).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
    /// Output file or blob (single input), directory or az:// prefix (-r or several inputs).
    #[arg(short = 'o', long, value_name = "OUTPUT")]
    output: String,
    /// Overwrite existing outputs.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// Output formats of `inspect`.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// A JSON array.
    Json,
}

/// `cmkvault inspect`.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// .cmk files or az://CONTAINER/NAME blobs (directories or az://CONTAINER/PREFIX with -r).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Inspect the .cmk files below directory targets, the encrypted blobs below prefixes.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `cmkvault shred-report`.
#[derive(Args)]
#[command(after_help = "\
Lists every .cmk file or blob that becomes unreadable if KID is revoked: with a versionless \
https://HOST[:PORT]/keys/NAME, objects under any version of that key; with a version, objects \
under that version; any other KID (a local key's) matches exactly. Reads headers and blob \
metadata only (no key access); with -r, the encrypted blobs below az://CONTAINER/PREFIX.")]
pub(crate) struct ShredReportArgs {
    /// The key (or key version) to be revoked.
    #[arg(long, value_name = "KID")]
    key: String,
    /// .cmk files or az://CONTAINER/NAME blobs (directories or az://CONTAINER/PREFIX with -r).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Search directory targets for .cmk files, prefixes for encrypted blobs.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `cmkvault rewrap`.
#[derive(Args)]
#[command(after_help = "\
Re-wraps each file's data key to another key without touching its encrypted regions: the \
data key is unwrapped once with the file's current key, wrapped with the new one, and a new \
file with the new header and the same body bytes is written next to the original, synced and \
renamed over it (a failure leaves the original intact; files are synced in groups of up to 1000, \
one syncfs per group). Prints FILE: OLD-KID -> NEW-KID per file once it is done (unless -q); a \
file already under the new key is left alone.

A blob (az://CONTAINER/NAME; with -r the encrypted blobs below az://CONTAINER/PREFIX) keeps its \
body: its metadata is replaced by Set Blob Metadata, all other metadata entries re-sent, on \
condition that its ETag is still the one its metadata was read with; a blob changed meanwhile \
fails (412) and is left as the other writer left it. This needs AZURE_STORAGE_ACCOUNT_KEY, \
AZURE_STORAGE_SAS_KEY or AZURE_STORAGE_TOKEN (or AZURE_STORAGE_USE_EMULATOR=true).

--to KID: https://HOST[:PORT]/keys/NAME[/VERSION] (a versionless id means that key's current \
version) or file:PATH (a local key). --to latest: the current version of each file's own vault \
key (after a rotation), so the old version can then be disabled.

The current key: the KeyId recorded in each file, under decrypt's rule (a recorded https \
KeyId only on the host of CMKVAULT_URL or one named by --allow-key-host), or --key. Files are \
checked against their object name as decrypt does (a renamed or moved file fails).")]
pub(crate) struct RewrapArgs {
    /// The new key-encryption key: a key id URL, file:PATH, or `latest` (see below).
    #[arg(long, value_name = "KID|latest")]
    to: String,
    /// The current key: a key id URL or file:PATH (default: the file's recorded KeyId).
    #[arg(long, value_name = "KID")]
    key: Option<String>,
    /// Also trust KeyIds on this HOST[:PORT] (repeatable; port 443 if omitted).
    #[arg(long, value_name = "HOST[:PORT]")]
    allow_key_host: Vec<String>,
    /// Accept data keys wrapped with RSA1_5 (legacy data only; re-wrapped with the new key's
    /// algorithm).
    #[arg(long)]
    allow_legacy: bool,
    /// Re-wrap the .cmk files below directory targets, the encrypted blobs below prefixes.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Print nothing on success.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// .cmk files or az://CONTAINER/NAME blobs (directories or az://CONTAINER/PREFIX with -r).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
}

/// Where an object is: a local file or a blob.
enum Loc {
    File(PathBuf),
    Blob(AzPath),
}

impl Loc {
    /// How errors and reports name it.
    fn shown(&self) -> String {
        match self {
            Loc::File(p) => p.display().to_string(),
            Loc::Blob(az) => az.shown(),
        }
    }
}

/// One object to process: where it is, where its output goes, the object name it is bound to.
struct Job {
    input: Loc,
    output: Loc,
    name: String,
    size: u64,
}

/// An input found for a command-line input: where it is, its path relative to the input root
/// (for an input named on the command line, its file name), its size.
struct Input {
    loc: Loc,
    rel: String,
    size: u64,
}

/// The regular files below `dir` (sorted), as (path, `/`-joined relative name). Symbolic links
/// and special files are skipped.
fn walk(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("{}: cannot list", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list", d.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                bail!("{}: file name is not valid UTF-8", entry.path().display());
            };
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let ft = entry
                .file_type()
                .with_context(|| format!("{}: cannot stat", entry.path().display()))?;
            if ft.is_dir() {
                stack.push((entry.path(), rel));
            } else if ft.is_file() {
                out.push((entry.path(), rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn file_name_of(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{}: has no UTF-8 file name", path.display()))
}

/// The files a local input names: the file itself, or with `recursive` the files below a
/// directory (only `.cmk` files when `cmk_only`).
fn local_inputs(input: &Path, recursive: bool, cmk_only: bool) -> Result<Vec<Input>> {
    let shown = input.display();
    let meta = std::fs::metadata(input).with_context(|| format!("{shown}: cannot read"))?;
    if !meta.is_dir() {
        let rel = file_name_of(input)?;
        let loc = Loc::File(input.to_path_buf());
        return Ok(vec![Input {
            loc,
            rel,
            size: meta.len(),
        }]);
    }
    if !recursive {
        bail!("{shown}: is a directory (use -r)");
    }
    let mut out = Vec::new();
    for (path, rel) in walk(input)? {
        if cmk_only && !rel.ends_with(SUFFIX) {
            continue;
        }
        let size = std::fs::metadata(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        out.push(Input {
            loc: Loc::File(path),
            rel,
            size,
        });
    }
    Ok(out)
}

/// The objects the inputs of `common` name: local files (`.cmk` files below directories when
/// decrypting) and, when decrypting, blobs (`-r`: the encrypted blobs below a prefix).
async fn inputs(common: &CommonArgs, decrypt: bool, stores: &mut Stores) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for input in &common.inputs {
        if !blob::is_az(input) {
            out.extend(local_inputs(Path::new(input), common.recursive, decrypt)?);
            continue;
        }
        if !decrypt {
            bail!("{input}: encrypt reads local files only (Azure Blob inputs are not supported)");
        }
        for f in blob::find(stores, input, common.recursive).await? {
            out.push(Input {
                loc: Loc::Blob(f.az),
                rel: f.rel,
                size: f.size,
            });
        }
    }
    if out.is_empty() {
        if decrypt {
            bail!("no {SUFFIX} files or encrypted blobs found");
        }
        bail!("no input files found");
    }
    Ok(out)
}

/// `.cmk` stripped from a file's relative name (an error naming `path` if it has none).
fn strip_suffix(rel: &str, path: &Path) -> Result<String> {
    match rel.strip_suffix(SUFFIX) {
        Some(stem) if !stem.is_empty() && !stem.ends_with('/') => Ok(stem.to_string()),
        _ => bail!("{}: not a {SUFFIX} file", path.display()),
    }
}

/// Where `-o` points: one output, or a directory or prefix the outputs go below.
enum OutRoot {
    One(Loc),
    Dir(PathBuf),
    Prefix(AzPrefix),
}

impl OutRoot {
    fn parse(output: &str, to_dir: bool) -> Result<OutRoot> {
        Ok(match (blob::is_az(output), to_dir) {
            (false, false) => OutRoot::One(Loc::File(PathBuf::from(output))),
            (false, true) => OutRoot::Dir(PathBuf::from(output)),
            (true, false) => OutRoot::One(Loc::Blob(AzPath::parse(output)?)),
            (true, true) => OutRoot::Prefix(AzPrefix::parse(output)?),
        })
    }

    /// The output of an input whose output-relative name is `rel`.
    fn place(&self, rel: &str) -> Loc {
        match self {
            OutRoot::One(Loc::File(p)) => Loc::File(p.clone()),
            OutRoot::One(Loc::Blob(az)) => Loc::Blob(az.clone()),
            OutRoot::Dir(d) => Loc::File(rel.split('/').fold(d.clone(), |p, part| p.join(part))),
            OutRoot::Prefix(p) => Loc::Blob(p.child(rel)),
        }
    }
}

/// The output-relative name of one input: blobs are written without a suffix; local outputs
/// get `.cmk` (encrypt) or lose it (decrypt).
fn output_rel(input: &Input, to_blob: bool, decrypt: bool) -> Result<String> {
    Ok(match (&input.loc, decrypt) {
        (Loc::File(p), true) => strip_suffix(&input.rel, p)?,
        (Loc::File(_), false) if !to_blob => format!("{}{SUFFIX}", input.rel),
        _ => input.rel.clone(),
    })
}

/// The object name an input is bound to: the blob's `CONTAINER/NAME` (the input's when
/// decrypting, the output's when encrypting), else the file's relative name without `.cmk`.
fn bound_name(input: &Input, output: &Loc, decrypt: bool) -> Result<String> {
    Ok(match (&input.loc, output, decrypt) {
        (Loc::Blob(az), _, true) | (_, Loc::Blob(az), false) => az.object_name(),
        (Loc::File(p), _, true) => strip_suffix(&input.rel, p)?,
        (_, _, false) => input.rel.clone(),
    })
}

/// Plans the jobs: inputs expanded, outputs and object names derived, collisions and existing
/// outputs refused before anything is written.
async fn plan(common: &CommonArgs, decrypt: bool, stores: &mut Stores) -> Result<Vec<Job>> {
    if decrypt && blob::is_az(&common.output) {
        bail!(
            "{}: decrypt writes local files only (Azure Blob outputs are not supported)",
            common.output
        );
    }
    let to_dir = common.recursive || common.inputs.len() > 1;
    let root = OutRoot::parse(&common.output, to_dir)?;
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    let to_blob = blob::is_az(&common.output);
    for input in inputs(common, decrypt, stores).await? {
        let output = root.place(&output_rel(&input, to_blob, decrypt)?);
        let name = bound_name(&input, &output, decrypt)?;
        if !seen.insert(output.shown()) {
            bail!(
                "{}: two inputs would be written to the same output",
                output.shown()
            );
        }
        jobs.push(Job {
            input: input.loc,
            output,
            name,
            size: input.size,
        });
    }
    if !common.force {
        refuse_existing(&jobs, &root, stores).await?;
    }
    Ok(jobs)
}

/// Refuses (before anything is written) outputs that exist.
async fn refuse_existing(jobs: &[Job], root: &OutRoot, stores: &mut Stores) -> Result<()> {
    let mut blobs = Vec::new();
    for job in jobs {
        match &job.output {
            Loc::File(p) if std::fs::symlink_metadata(p).is_ok() => {
                bail!("{}: output exists (use --force to overwrite)", p.display())
            }
            Loc::File(_) => {}
            Loc::Blob(az) => blobs.push(az),
        }
    }
    if blobs.is_empty() {
        return Ok(());
    }
    let dir = match root {
        OutRoot::Prefix(p) => Some(p),
        _ => None,
    };
    blob::refuse_existing(stores, &blobs, dir).await
}

/// A progress bar on stderr when it is a terminal and not `quiet`; hidden otherwise.
fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// A reader that advances a progress bar.
struct Counting<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A temporary file next to `output` (its directory created if needed).
fn temp_for(output: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let make = || {
        tempfile::Builder::new()
            .prefix(".cmkvault-")
            .suffix(".tmp")
            .tempfile_in(&dir)
    };
    // The directory usually exists: create it only when the first try says it does not.
    let tmp = match make() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create the directory", dir.display()))?;
            make()
        }
        other => other,
    };
    tmp.with_context(|| format!("{}: cannot create a temporary file", dir.display()))
}

/// Moves a finished temporary file to `output` (refusing to replace one unless `force`).
fn commit(tmp: tempfile::NamedTempFile, output: &Path, force: bool) -> Result<()> {
    commit_with(tmp, output, force, true)
}

/// [`commit`], syncing the data first only if `durable` (the commands always are; `bench
/// envelope` is only with `--fsync`).
fn commit_with(
    tmp: tempfile::NamedTempFile,
    output: &Path,
    force: bool,
    durable: bool,
) -> Result<()> {
    if durable {
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("{}: cannot sync", output.display()))?;
    }
    let res = if force {
        tmp.persist(output).map(|_| ())
    } else {
        tmp.persist_noclobber(output).map(|_| ())
    };
    res.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{}: output exists (use --force to overwrite)",
                output.display()
            )
        } else {
            anyhow!("{}: cannot write: {}", output.display(), e.error)
        }
    })
}

/// Parses `--key` (or `flag`): a key id URL (remote) or `file:PATH` (local JWK).
async fn load_key(flag: &str, spec: &str) -> Result<Arc<dyn KeyEncryptionKey>> {
    if let Some(path) = spec.strip_prefix("file:") {
        let key = LocalKey::load(Path::new(path)).with_context(|| format!("{flag} {spec}"))?;
        return Ok(Arc::new(key));
    }
    if spec.starts_with("https://") {
        let config = RemoteKeyConfig::from_env().context(flag.to_string())?;
        let key = RemoteKey::connect(spec, config)
            .await
            .with_context(|| format!("{flag} {spec}"))?;
        return Ok(Arc::new(key));
    }
    bail!("{flag} {spec}: expected https://HOST[:PORT]/keys/NAME[/VERSION] or file:PATH")
}

/// Runs a blocking closure off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("worker failed: {e}"))?
}

/// Encrypts one file into `output`: a temporary file beside it, synced if `durable`, then
/// renamed into place, so `output` never holds a partial file. `bench envelope` runs this
/// (`cmkvault encrypt` runs [`encrypt_to_temp`] and commits the outputs in groups).
pub(crate) fn encrypt_file(
    sealing: SealingKey,
    input: &Path,
    output: &Path,
    force: bool,
    durable: bool,
    bar: ProgressBar,
) -> Result<()> {
    let tmp = encrypt_to_temp(sealing, input, output, bar)?;
    commit_with(tmp, output, force, durable)
}

/// Encrypts one file into a temporary file beside `output` (not synced, not renamed).
pub(crate) fn encrypt_to_temp(
    sealing: SealingKey,
    input: &Path,
    output: &Path,
    bar: ProgressBar,
) -> Result<tempfile::NamedTempFile> {
    let file = File::open(input).with_context(|| format!("{}: cannot open", input.display()))?;
    let mut tmp = temp_for(output)?;
    // Unbuffered both ways: the encryptor reads a whole region per call straight into its
    // buffers and writes whole batches (a small object: header and body in one write).
    seal_container_with(sealing, Counting { inner: file, bar }, tmp.as_file_mut())
        .with_context(|| format!("{}", input.display()))?;
    Ok(tmp)
}

/// A `.cmk` file whose header has been read: its envelope and a reader at its body.
pub(crate) struct OpenedCmk {
    /// The parsed, validated envelope.
    pub(crate) envelope: Envelope,
    shown: String,
    reader: BufReader<File>,
}

/// Opens a `.cmk` file and reads its header (no key access).
pub(crate) fn open_cmk(path: &Path, opts: &OpenOptions) -> Result<OpenedCmk> {
    let shown = path.display().to_string();
    let input = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let meta = read_container(&mut reader).with_context(|| shown.clone())?;
    let envelope = Envelope::parse(&meta, opts).with_context(|| shown.clone())?;
    Ok(OpenedCmk {
        envelope,
        shown,
        reader,
    })
}

/// Decrypts an opened `.cmk` file with its unwrapped data key into `output` (a temporary file
/// beside it, synced if `durable`, renamed into place; nothing appears under `output` on any
/// error); returns the plaintext length. `bench envelope` runs this (`cmkvault decrypt` runs
/// [`decrypt_to_temp`] and commits the outputs in groups).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decrypt_file(
    cmk: OpenedCmk,
    dek: &DataKey,
    name: &str,
    opts: &OpenOptions,
    output: &Path,
    force: bool,
    durable: bool,
    bar: ProgressBar,
) -> Result<u64> {
    let (tmp, n) = decrypt_to_temp(cmk, dek, name, opts, output, bar)?;
    commit_with(tmp, output, force, durable)?;
    Ok(n)
}

/// Decrypts an opened `.cmk` file into a temporary file beside `output` (not synced, not
/// renamed; deleted when dropped); returns it and the plaintext length.
pub(crate) fn decrypt_to_temp(
    cmk: OpenedCmk,
    dek: &DataKey,
    name: &str,
    opts: &OpenOptions,
    output: &Path,
    bar: ProgressBar,
) -> Result<(tempfile::NamedTempFile, u64)> {
    let OpenedCmk {
        envelope,
        shown,
        reader,
    } = cmk;
    let mut plain = DecryptReader::new(Counting { inner: reader, bar }, &envelope, dek, name, opts)
        .with_context(|| format!("{shown} (object name {name:?})"))?;
    let mut tmp = temp_for(output)?;
    // Each verified region is written straight from the decryptor's buffer.
    let n = plain
        .copy_to(tmp.as_file_mut())
        .map_err(|e| anyhow!("{shown}: {e}"))?;
    Ok((tmp, n))
}

/// Files processed at once by `encrypt`, `decrypt` and `rewrap` (one per core, 2 to 8): the
/// key call of one overlaps the I/O of another.
fn file_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(2, 8)
}

/// Keeps the streaming buffers of the files in flight within one stream's bound
/// ([`cmkvault_envelope::stream_buffer_bound`]: 16 MiB on 2 cores, at most 64 MiB): many
/// small files run at once, a large one alone. Permits are KiB.
struct MemoryBudget {
    sem: tokio::sync::Semaphore,
    total_kib: u32,
}

impl MemoryBudget {
    fn new() -> MemoryBudget {
        let bound = cmkvault_envelope::stream_buffer_bound(REGION_DATA_LEN_V2_0);
        let total_kib = u32::try_from(bound / 1024).unwrap_or(u32::MAX);
        MemoryBudget {
            sem: tokio::sync::Semaphore::new(total_kib as usize),
            total_kib,
        }
    }

    /// Waits until a file of `size` bytes may start (its buffers: about twice its size, at
    /// most the bound).
    async fn reserve(&self, size: u64) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(size.saturating_mul(2) / 1024 + 64)
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        self.sem
            .acquire_many(kib)
            .await
            .map_err(|_| anyhow!("internal: the memory budget was closed"))
    }
}

/// Outputs are made durable and renamed into place in groups of at most this many files…
const GROUP_FILES: usize = 1000;
/// …or this many bytes.
const GROUP_BYTES: u64 = 1 << 30;

/// Finished temporary files waiting to be made durable and renamed to their outputs, a group
/// at a time: one `syncfs` per file system (Linux; elsewhere each file is synced) instead of an
/// `fsync` per file, then the renames, then one `fsync` per output directory. An output name
/// appears only once its data is on disk; on an error the group's temporary files are deleted
/// and the earlier groups stay.
struct Committer {
    force: bool,
    files: Vec<(tempfile::TempPath, PathBuf)>,
    bytes: u64,
}

impl Committer {
    fn new(force: bool) -> Committer {
        Committer {
            force,
            files: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a finished output; returns a full group to commit.
    fn add(
        &mut self,
        tmp: tempfile::NamedTempFile,
        output: PathBuf,
        bytes: u64,
    ) -> Result<Option<Group>> {
        if !cfg!(target_os = "linux") {
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("{}: cannot sync", output.display()))?;
        }
        // Closes the file (bounded open files); the path is still deleted if dropped.
        self.files.push((tmp.into_temp_path(), output));
        self.bytes += bytes;
        if self.files.len() >= GROUP_FILES || self.bytes >= GROUP_BYTES {
            return Ok(Some(self.take()));
        }
        Ok(None)
    }

    /// The files added so far, as a group to commit.
    fn take(&mut self) -> Group {
        self.bytes = 0;
        Group {
            force: self.force,
            files: std::mem::take(&mut self.files),
        }
    }
}

/// After file `error`: commits the files before it, then returns the error.
async fn finish_after_error(mut committer: Committer, error: anyhow::Error) -> Result<()> {
    let group = committer.take();
    if let Err(e) = blocking(move || group.commit()).await {
        return Err(error.context(format!("also, the files before it: {e}")));
    }
    Err(error)
}

/// A group of finished outputs (see [`Committer`]).
struct Group {
    force: bool,
    files: Vec<(tempfile::TempPath, PathBuf)>,
}

impl Group {
    /// Syncs, renames and syncs the directories (blocking).
    fn commit(self) -> Result<()> {
        let dirs: BTreeSet<PathBuf> = self
            .files
            .iter()
            .map(|(_, out)| match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        sync_file_systems(&dirs)?;
        for (tmp, output) in self.files {
            let res = if self.force {
                tmp.persist(&output)
            } else {
                tmp.persist_noclobber(&output)
            };
            res.map_err(|e| {
                if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow!(
                        "{}: output exists (use --force to overwrite)",
                        output.display()
                    )
                } else {
                    anyhow!("{}: cannot write: {}", output.display(), e.error)
                }
            })?;
        }
        // Make the renames durable.
        for d in &dirs {
            File::open(d)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("{}: cannot sync the directory", d.display()))?;
        }
        Ok(())
    }
}

/// Writes back every file system holding one of `dirs` (Linux: `syncfs`, once per file system;
/// elsewhere the files were synced one by one).
fn sync_file_systems(dirs: &BTreeSet<PathBuf>) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let mut seen = BTreeSet::new();
        for d in dirs {
            let f = File::open(d).with_context(|| format!("{}: cannot open", d.display()))?;
            let dev = f
                .metadata()
                .with_context(|| format!("{}: cannot stat", d.display()))?
                .dev();
            if seen.insert(dev) {
                rustix::fs::syncfs(&f).with_context(|| format!("{}: cannot sync", d.display()))?;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dirs;
    Ok(())
}

/// A job from a local file to a local file: `encrypt` and `decrypt` run these several at once
/// and commit their outputs in groups (blob jobs run one at a time, as `encrypt_job` and
/// `decrypt_job`).
struct FileJob {
    input: PathBuf,
    output: PathBuf,
    name: String,
    size: u64,
}

/// The jobs in order, in maximal runs of consecutive local-file jobs (`Ok`) and of other jobs
/// (`Err`: a blob is read or written).
fn runs(jobs: Vec<Job>) -> Vec<std::result::Result<Vec<FileJob>, Vec<Job>>> {
    let mut out: Vec<std::result::Result<Vec<FileJob>, Vec<Job>>> = Vec::new();
    for job in jobs {
        match job {
            Job {
                input: Loc::File(input),
                output: Loc::File(output),
                name,
                size,
            } => {
                let fj = FileJob {
                    input,
                    output,
                    name,
                    size,
                };
                match out.last_mut() {
                    Some(Ok(run)) => run.push(fj),
                    _ => out.push(Ok(vec![fj])),
                }
            }
            other => match out.last_mut() {
                Some(Err(run)) => run.push(other),
                _ => out.push(Err(vec![other])),
            },
        }
    }
    out
}

/// `cmkvault encrypt`.
pub(crate) async fn encrypt(args: EncryptArgs) -> Result<()> {
    let mut stores = Stores::default();
    let jobs = plan(&args.common, false, &mut stores).await?;
    let key = load_key("--key", &args.key).await?;
    let bar = progress(jobs.iter().map(|j| j.size).sum(), args.common.quiet);
    let force = args.common.force;
    let result = async {
        for run in runs(jobs) {
            match run {
                Ok(files) => encrypt_files(files, &key, force, &bar).await?,
                Err(jobs) => {
                    for job in jobs {
                        encrypt_job(job, key.as_ref(), &mut stores, force, &bar).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    result
}

/// Encrypts local files into local `.cmk` files, several at once (results in order), outputs
/// committed in durable groups. On an error the files before it are kept (committed) and
/// nothing after it is written.
async fn encrypt_files(
    jobs: Vec<FileJob>,
    key: &Arc<dyn KeyEncryptionKey>,
    force: bool,
    bar: &ProgressBar,
) -> Result<()> {
    // Several files at once within one stream's memory (see [`MemoryBudget`]).
    let budget = MemoryBudget::new();
    let budget = &budget;
    let mut done = futures::stream::iter(jobs.into_iter().map(|job| {
        let (key, bar) = (key.clone(), bar.clone());
        async move {
            let sealing = SealingKey::new(key.as_ref(), &job.name)
                .await
                .with_context(|| format!("{}", job.input.display()))?;
            let (output, size) = (job.output.clone(), job.size);
            let _memory = budget.reserve(size).await?;
            let tmp =
                blocking(move || encrypt_to_temp(sealing, &job.input, &job.output, bar)).await?;
            Ok::<_, anyhow::Error>((tmp, output, size))
        }
    }))
    .buffered(file_workers());
    let mut committer = Committer::new(force);
    while let Some(r) = done.next().await {
        let (tmp, output, size) = match r {
            Ok(v) => v,
            Err(e) => {
                // As if one file at a time: the files before this one are kept; the ones
                // after it (perhaps finished) are not written.
                drop(done);
                return finish_after_error(committer, e).await;
            }
        };
        if let Some(group) = committer.add(tmp, output, size)? {
            blocking(move || group.commit()).await?;
        }
    }
    let group = committer.take();
    blocking(move || group.commit()).await
}

/// Encrypts one local file into a `.cmk` file or a blob, bound to the job's object name.
async fn encrypt_job(
    job: Job,
    key: &dyn KeyEncryptionKey,
    stores: &mut Stores,
    force: bool,
    bar: &ProgressBar,
) -> Result<()> {
    let Loc::File(input) = job.input else {
        bail!("{}: encrypt reads local files only", job.input.shown());
    };
    let sealing = SealingKey::new(key, &job.name)
        .await
        .with_context(|| input.display().to_string())?;
    match job.output {
        Loc::File(output) => {
            let bar = bar.clone();
            blocking(move || encrypt_file(sealing, &input, &output, force, true, bar)).await
        }
        Loc::Blob(dest) => {
            let size = job.size;
            let up = blob::Upload {
                input,
                size,
                dest: &dest,
                force,
            };
            blob::upload(stores, sealing, up, bar).await
        }
    }
}

/// `host:port` of an https URL (port defaulted), lower case.
fn host_port(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    if u.scheme() != "https" {
        return None;
    }
    let host = u.host_str()?.to_ascii_lowercase();
    Some(format!("{host}:{}", u.port_or_known_default()?))
}

/// `HOST[:PORT]` as given to `--allow-key-host` → `host:port`.
fn normalize_host(spec: &str) -> Result<String> {
    host_port(&format!("https://{}/", spec.trim()))
        .ok_or_else(|| anyhow!("--allow-key-host {spec}: expected HOST[:PORT]"))
}

/// Finds the KEK for each recorded KeyId, under the allow-host rule.
struct Keys {
    given: Option<Given>,
    allowed: Vec<String>,
    config: Option<RemoteKeyConfig>,
    cache: HashMap<String, Arc<dyn KeyEncryptionKey>>,
}

enum Given {
    Local(LocalKey),
    Remote(RemoteKey),
}

impl Keys {
    async fn new(key: Option<&str>, allow_key_host: &[String]) -> Result<Keys> {
        let given = match key {
            None => None,
            Some(spec) => {
                if let Some(path) = spec.strip_prefix("file:") {
                    Some(Given::Local(
                        LocalKey::load(Path::new(path)).with_context(|| format!("--key {spec}"))?,
                    ))
                } else if spec.starts_with("https://") {
                    let config = RemoteKeyConfig::from_env().context("--key")?;
                    Some(Given::Remote(
                        RemoteKey::connect(spec, config)
                            .await
                            .with_context(|| format!("--key {spec}"))?,
                    ))
                } else {
                    bail!(
                        "--key {spec}: expected https://HOST[:PORT]/keys/NAME[/VERSION] or file:PATH"
                    )
                }
            }
        };
        let vault = std::env::var("CMKVAULT_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let mut allowed: Vec<String> = host_port(vault.trim()).into_iter().collect();
        for h in allow_key_host {
            allowed.push(normalize_host(h)?);
        }
        Ok(Keys {
            given,
            allowed,
            config: None,
            cache: HashMap::new(),
        })
    }

    async fn for_kid(&mut self, kid: &str) -> Result<Arc<dyn KeyEncryptionKey>> {
        if let Some(k) = self.cache.get(kid) {
            return Ok(k.clone());
        }
        let key: Arc<dyn KeyEncryptionKey> = match &self.given {
            // The envelope check (kid must match) names a wrong local key.
            Some(Given::Local(k)) => Arc::new(k.clone()),
            Some(Given::Remote(k)) => Arc::new(k.for_kid(kid).await?),
            None => {
                let Some(hp) = host_port(kid) else {
                    bail!(
                        "the data key is wrapped under {kid}, not a vault key id: pass --key \
                         file:PATH (a local key) or --key https://…"
                    );
                };
                if !self.allowed.contains(&hp) {
                    bail!(
                        "the data key is wrapped under a key on {hp}, which is not the vault of \
                         CMKVAULT_URL: pass --allow-key-host {hp} to trust it, or --key"
                    );
                }
                let config = match &self.config {
                    Some(c) => c.clone(),
                    None => {
                        let c = RemoteKeyConfig::from_env()?;
                        self.config = Some(c.clone());
                        c
                    }
                };
                Arc::new(RemoteKey::connect(kid, config).await?)
            }
        };
        self.cache.insert(kid.to_string(), key.clone());
        Ok(key)
    }
    /// Unwraps an envelope's data key with the key its `KeyId` names (once per object).
    async fn unwrap_dek(&mut self, envelope: &Envelope) -> Result<DataKey> {
        let key = self.for_kid(envelope.kid()).await?;
        Ok(envelope.unwrap_dek(key.as_ref()).await?)
    }
}

/// `cmkvault decrypt`.
pub(crate) async fn decrypt(args: DecryptArgs) -> Result<()> {
    let mut stores = Stores::default();
    let jobs = plan(&args.common, true, &mut stores).await?;
    let mut keys = Keys::new(args.key.as_deref(), &args.allow_key_host).await?;
    let run = DecryptRun {
        opts: OpenOptions {
            allow_legacy: args.allow_legacy,
            require_integrity: !args.no_integrity,
        },
        force: args.common.force,
        bar: progress(jobs.iter().map(|j| j.size).sum(), args.common.quiet),
    };
    let result = async {
        for batch in runs(jobs) {
            match batch {
                Ok(files) => decrypt_files(files, &mut keys, &run).await?,
                Err(jobs) => {
                    for job in jobs {
                        decrypt_job(job, &mut keys, &mut stores, &run).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    run.bar.finish_and_clear();
    result
}

/// Decrypts local `.cmk` files into local files, several at once (results in order; one key
/// call, the unwrap, per file), outputs committed in durable groups. On an error the files
/// before it are kept (committed) and nothing after it is written.
async fn decrypt_files(jobs: Vec<FileJob>, keys: &mut Keys, run: &DecryptRun) -> Result<()> {
    let keys = tokio::sync::Mutex::new(keys);
    let keys = &keys;
    let opts = run.opts;
    // Several files at once within one stream's memory (see [`MemoryBudget`]).
    let budget = MemoryBudget::new();
    let budget = &budget;
    let mut done = futures::stream::iter(jobs.into_iter().map(|job| {
        let bar = run.bar.clone();
        async move {
            let input = job.input.clone();
            let cmk = blocking(move || open_cmk(&input, &opts)).await?;
            let shown = job.input.display().to_string();
            let key = keys
                .lock()
                .await
                .for_kid(cmk.envelope.kid())
                .await
                .with_context(|| shown.clone())?;
            let dek = cmk
                .envelope
                .unwrap_dek(key.as_ref())
                .await
                .with_context(|| shown.clone())?;
            let output = job.output.clone();
            let _memory = budget.reserve(job.size).await?;
            let (tmp, n) =
                blocking(move || decrypt_to_temp(cmk, &dek, &job.name, &opts, &job.output, bar))
                    .await?;
            Ok::<_, anyhow::Error>((tmp, output, n))
        }
    }))
    .buffered(file_workers());
    let mut committer = Committer::new(run.force);
    while let Some(r) = done.next().await {
        let (tmp, output, n) = match r {
            Ok(v) => v,
            Err(e) => {
                // As if one file at a time: the files before this one are kept; the ones
                // after it (perhaps finished) are not written.
                drop(done);
                return finish_after_error(committer, e).await;
            }
        };
        if let Some(group) = committer.add(tmp, output, n)? {
            blocking(move || group.commit()).await?;
        }
    }
    let group = committer.take();
    blocking(move || group.commit()).await
}

/// The settings of one decrypt run.
struct DecryptRun {
    opts: OpenOptions,
    force: bool,
    bar: ProgressBar,
}

/// The metadata and a reader of the body of an encrypted object (a `.cmk` file or a blob).
async fn open_encrypted(
    loc: &Loc,
    stores: &mut Stores,
) -> Result<(EnvelopeMetadata, Box<dyn Read + Send>)> {
    match loc {
        Loc::File(path) => {
            let shown = path.display().to_string();
            let file = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let meta = read_container(&mut reader).with_context(|| shown.clone())?;
            Ok((meta, Box::new(reader)))
        }
        Loc::Blob(az) => {
            let (meta, reader) = blob::open(stores, az).await?;
            Ok((meta, Box::new(reader)))
        }
    }
}

/// Decrypts one object into its (local) output: the data key is unwrapped once, the body is
/// decrypted into a temporary file that is renamed on success.
async fn decrypt_job(
    job: Job,
    keys: &mut Keys,
    stores: &mut Stores,
    run: &DecryptRun,
) -> Result<()> {
    let shown = job.input.shown();
    let Loc::File(output) = job.output else {
        bail!("{}: decrypt writes local files only", job.output.shown());
    };
    let (meta, reader) = open_encrypted(&job.input, stores).await?;
    let envelope = Envelope::parse(&meta, &run.opts).with_context(|| shown.clone())?;
    let dek = keys
        .unwrap_dek(&envelope)
        .await
        .with_context(|| shown.clone())?;
    let (opts, force, bar, name) = (run.opts, run.force, run.bar.clone(), job.name);
    blocking(move || {
        let reader = Counting { inner: reader, bar };
        let mut plain = DecryptReader::new(reader, &envelope, &dek, &name, &opts)
            .with_context(|| format!("{shown} (object name {name:?})"))?;
        let tmp = temp_for(&output)?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        std::io::copy(&mut plain, &mut w).map_err(|e| {
            let inner = e.get_ref().map(|i| i.to_string());
            anyhow!("{shown}: {}", inner.unwrap_or_else(|| e.to_string()))
        })?;
        let tmp = w
            .into_inner()
            .map_err(|e| anyhow!("{}: cannot write: {}", output.display(), e.error()))?;
        commit(tmp, &output, force)
    })
    .await
}

/// What `inspect` shows of one file.
#[derive(serde::Serialize)]
struct Inspection {
    file: String,
    kid: String,
    alg: String,
    protocol: String,
    region_size: u64,
    ciphertext_size: u64,
    plaintext_size: u64,
    integrity: &'static str,
}

/// What `inspect` shows of an object with metadata `meta` and a body of `body` bytes.
fn inspection(
    shown: String,
    meta: &cmkvault_envelope::EnvelopeMetadata,
    body: u64,
) -> Result<Inspection> {
    let opts = OpenOptions {
        allow_legacy: true,
        require_integrity: false,
    };
    let env = Envelope::parse(meta, &opts).with_context(|| shown.clone())?;
    let region = env.data_length();
    let full = body / (region + REGION_OVERHEAD);
    let rest = body % (region + REGION_OVERHEAD);
    let plaintext = full * region + rest.saturating_sub(REGION_OVERHEAD);
    let integrity = match &env.integrity {
        None => "absent",
        Some(r) if r.plaintext_length != plaintext => {
            "present (disagrees with the body size: truncated?; MAC unverified without the key)"
        }
        Some(_) => "present (MAC not verified: needs the key)",
    };
    Ok(Inspection {
        file: shown,
        kid: env.kid().to_string(),
        alg: env.alg().to_string(),
        protocol: env.protocol().to_string(),
        region_size: region,
        ciphertext_size: body,
        plaintext_size: plaintext,
        integrity,
    })
}

/// An encrypted object a target names: a `.cmk` file with its path relative to the target root
/// (a file named on the command line: its file name), or a blob with what its HEAD said.
enum Target {
    File(PathBuf, String),
    Blob(blob::Found),
}

/// The encrypted objects `targets` name: files (`.cmk` files below directories with
/// `recursive`) and blobs (the encrypted blobs below a prefix with `recursive`).
async fn find_targets(
    targets: &[String],
    recursive: bool,
    stores: &mut Stores,
) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    for t in targets {
        if blob::is_az(t) {
            let found = blob::find(stores, t, recursive).await?;
            out.extend(found.into_iter().map(Target::Blob));
            continue;
        }
        for input in local_inputs(Path::new(t), recursive, true)? {
            if let Loc::File(p) = input.loc {
                out.push(Target::File(p, input.rel));
            }
        }
    }
    Ok(out)
}

/// Opens a `.cmk` file and reads its header, leaving the file at the start of the body.
fn read_header(path: &Path) -> Result<(EnvelopeMetadata, File)> {
    let shown = path.display().to_string();
    let mut f = File::open(path).with_context(|| format!("{shown}: cannot open"))?;
    // Unbuffered: read_container reads exactly the header, leaving `f` at the body.
    let meta = read_container(&mut f).with_context(|| shown.clone())?;
    Ok((meta, f))
}

/// What `inspect` shows of one target (headers or metadata only; no key access).
fn inspect_target(target: &Target) -> Result<Inspection> {
    let (path, shown) = match target {
        Target::Blob(f) => return inspection(f.az.shown(), &f.envelope()?, f.size),
        Target::File(p, _) => (p, p.display().to_string()),
    };
    let (meta, mut f) = read_header(path)?;
    let len = f
        .metadata()
        .with_context(|| format!("{shown}: cannot stat"))?
        .len();
    let start = f
        .stream_position()
        .with_context(|| format!("{shown}: cannot read"))?;
    inspection(shown, &meta, len.saturating_sub(start))
}

/// (host:port, lower-case key name, lower-case version) of a key id URL.
fn key_parts(kid: &str) -> Option<(String, String, Option<String>)> {
    let hp = host_port(kid)?;
    let u = reqwest::Url::parse(kid).ok()?;
    let segs: Vec<String> = u
        .path_segments()?
        .filter(|p| !p.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    match segs.as_slice() {
        [k, name] if k == "keys" => Some((hp, name.clone(), None)),
        [k, name, v] if k == "keys" => Some((hp, name.clone(), Some(v.clone()))),
        _ => None,
    }
}

/// Whether a file wrapped under `file_kid` is lost when `revoked` is.
fn revoked_by(revoked: &str, file_kid: &str) -> bool {
    match (key_parts(revoked), key_parts(file_kid)) {
        (Some((h1, n1, v1)), Some((h2, n2, v2))) => {
            h1 == h2 && n1 == n2 && (v1.is_none() || v1 == v2)
        }
        _ => revoked == file_kid,
    }
}

/// `cmkvault shred-report`.
pub(crate) async fn shred_report(args: ShredReportArgs) -> Result<()> {
    let mut stores = Stores::default();
    let targets = find_targets(&args.targets, args.recursive, &mut stores).await?;
    let rows: Vec<Inspection> = targets
        .iter()
        .map(inspect_target)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|r| revoked_by(&args.key, &r.kid))
        .collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let v: Vec<_> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "file": r.file, "kid": r.kid, "plaintext_size": r.plaintext_size
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &v)?;
            writeln!(out)?;
        }
        Format::Table => {
            writeln!(out, "FILE\tKID\tPLAINTEXT")?;
            for r in &rows {
                writeln!(out, "{}\t{}\t{}", r.file, r.kid, r.plaintext_size)?;
            }
            writeln!(
                out,
                "{} of {} files unreadable if {} is revoked",
                rows.len(),
                targets.len(),
                args.key
            )?;
        }
    }
    Ok(())
}

/// `cmkvault inspect`.
pub(crate) async fn inspect(args: InspectArgs) -> Result<()> {
    let mut stores = Stores::default();
    let targets = find_targets(&args.targets, args.recursive, &mut stores).await?;
    let rows = targets
        .iter()
        .map(inspect_target)
        .collect::<Result<Vec<_>>>()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Table => {
            writeln!(
                out,
                "FILE\tKID\tALG\tPROTOCOL\tREGION\tCIPHERTEXT\tPLAINTEXT\tINTEGRITY"
            )?;
            for r in &rows {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.file,
                    r.kid,
                    r.alg,
                    r.protocol,
                    r.region_size,
                    r.ciphertext_size,
                    r.plaintext_size,
                    r.integrity
                )?;
            }
        }
    }
    Ok(())
}

/// The versionless key id (`https://HOST[:PORT]/keys/NAME`) of a vault key id.
fn versionless(kid: &str) -> Option<String> {
    let u = reqwest::Url::parse(kid).ok()?;
    if u.scheme() != "https" || u.query().is_some() {
        return None;
    }
    let segs: Vec<&str> = u.path_segments()?.filter(|p| !p.is_empty()).collect();
    match segs.as_slice() {
        [k, name] | [k, name, _] if k.eq_ignore_ascii_case("keys") => {
            let host = u.host_str()?;
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            Some(format!("https://{host}{port}/keys/{name}"))
        }
        _ => None,
    }
}

/// Writes `header` then the rest of `body` to a temporary file beside `path` with `path`'s
/// permissions (not synced, not renamed; deleted when dropped).
fn rewrapped_temp(
    path: &Path,
    mut body: File,
    header: &cmkvault_envelope::EnvelopeMetadata,
) -> Result<tempfile::NamedTempFile> {
    let shown = path.display().to_string();
    let perms = body
        .metadata()
        .with_context(|| format!("{shown}: cannot stat"))?
        .permissions();
    let tmp = temp_for(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp);
    write_container(&mut w, header, None).with_context(|| format!("{shown}: cannot write"))?;
    std::io::copy(&mut body, &mut w).with_context(|| format!("{shown}: cannot copy the body"))?;
    let tmp = w
        .into_inner()
        .map_err(|e| anyhow!("{shown}: cannot write: {}", e.error()))?;
    std::fs::set_permissions(tmp.path(), perms)
        .with_context(|| format!("{shown}: cannot set permissions"))?;
    Ok(tmp)
}

/// What happened to one local file in `rewrap`.
enum FileRewrap {
    /// Already under the new key: the line to print.
    Skipped(String),
    /// The new file (header and body) to rename over `path`, and the line to print.
    Done {
        tmp: tempfile::NamedTempFile,
        path: PathBuf,
        size: u64,
        line: String,
    },
}

/// Re-wraps one `.cmk` file's data key into a temporary file beside it (`rel`: its path
/// relative to the target root, for its object name).
async fn rewrap_file(
    path: PathBuf,
    rel: String,
    rw: &tokio::sync::Mutex<&mut Rewrapper>,
) -> Result<FileRewrap> {
    let shown = path.display().to_string();
    let name = strip_suffix(&rel, &path)?;
    let p = path.clone();
    let (meta, f, size) = blocking(move || {
        let (meta, f) = read_header(&p)?;
        let size = f
            .metadata()
            .with_context(|| format!("{}: cannot stat", p.display()))?
            .len();
        Ok((meta, f, size))
    })
    .await?;
    // The key look-ups (cached) under the lock; the unwrap and wrap calls outside it.
    let step = rw.lock().await.keys_for(&meta, &shown).await?;
    let opts = rw.lock().await.opts;
    let done = step.finish(&meta, &name, &shown, &opts).await?;
    let Rewrapped::New(_, _, new_meta) = &done else {
        return Ok(FileRewrap::Skipped(done.line(&shown)));
    };
    let (p, new_meta) = (path.clone(), new_meta.clone());
    let tmp = blocking(move || rewrapped_temp(&p, f, &new_meta)).await?;
    Ok(FileRewrap::Done {
        tmp,
        path,
        size,
        line: done.line(&shown),
    })
}

/// `cmkvault rewrap`: local files several at once, their new files made durable and renamed
/// over the originals in groups (see [`Committer`]), each file's line printed once its group is
/// committed; blobs one at a time. An error keeps the objects before it re-wrapped.
pub(crate) async fn rewrap(args: RewrapArgs) -> Result<()> {
    let mut stores = Stores::default();
    let targets = find_targets(&args.targets, args.recursive, &mut stores).await?;
    if targets.is_empty() {
        bail!("no {SUFFIX} files or encrypted blobs found");
    }
    let mut rw = Rewrapper::new(&args).await?;
    // Runs of consecutive files (`Ok`) and of blobs (`Err`), in order.
    let mut runs: Vec<RewrapRun> = Vec::new();
    for target in targets {
        match (target, runs.last_mut()) {
            (Target::File(p, rel), Some(Ok(run))) => run.push((p, rel)),
            (Target::File(p, rel), _) => runs.push(Ok(vec![(p, rel)])),
            (Target::Blob(f), Some(Err(run))) => run.push(f),
            (Target::Blob(f), _) => runs.push(Err(vec![f])),
        }
    }
    for run in runs {
        match run {
            Ok(files) => rewrap_files(files, &mut rw, args.quiet).await?,
            Err(blobs) => {
                for found in blobs {
                    let line = rewrap_blob(found, &mut rw, &mut stores).await?;
                    if !args.quiet {
                        writeln!(std::io::stdout().lock(), "{line}")?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A run of consecutive rewrap targets: files (path, relative name) or blobs.
type RewrapRun = std::result::Result<Vec<(PathBuf, String)>, Vec<blob::Found>>;

/// Re-wraps local `.cmk` files several at once (results in order) and commits the new files in
/// durable groups, printing each group's lines (unless `quiet`) once it is committed.
async fn rewrap_files(
    files: Vec<(PathBuf, String)>,
    rw: &mut Rewrapper,
    quiet: bool,
) -> Result<()> {
    let rw = tokio::sync::Mutex::new(rw);
    let rw = &rw;
    let mut done = futures::stream::iter(
        files
            .into_iter()
            .map(|(path, rel)| rewrap_file(path, rel, rw)),
    )
    .buffered(file_workers());
    let mut committer = Committer::new(true);
    let mut lines: Vec<String> = Vec::new();
    let print = |lines: &mut Vec<String>| -> Result<()> {
        if !quiet {
            let mut out = std::io::stdout().lock();
            for l in lines.iter() {
                writeln!(out, "{l}")?;
            }
        }
        lines.clear();
        Ok(())
    };
    while let Some(r) = done.next().await {
        match r {
            Ok(FileRewrap::Skipped(line)) => lines.push(line),
            Ok(FileRewrap::Done {
                tmp,
                path,
                size,
                line,
            }) => {
                lines.push(line);
                if let Some(group) = committer.add(tmp, path, size)? {
                    blocking(move || group.commit()).await?;
                    print(&mut lines)?;
                }
            }
            Err(e) => {
                drop(done);
                let group = committer.take();
                if let Err(c) = blocking(move || group.commit()).await {
                    return Err(e.context(format!("also, the files before it: {c}")));
                }
                print(&mut lines)?;
                return Err(e);
            }
        }
    }
    let group = committer.take();
    blocking(move || group.commit()).await?;
    print(&mut lines)
}

/// Re-wraps one blob and replaces its metadata; returns the line to print.
async fn rewrap_blob(
    found: blob::Found,
    rw: &mut Rewrapper,
    stores: &mut Stores,
) -> Result<String> {
    let shown = found.az.shown();
    let name = found.az.object_name();
    let done = rw.rewrap(&found.envelope()?, &name, &shown).await?;
    if let Rewrapped::New(_, _, new) = &done {
        blob::replace_metadata(stores, &found, new).await?;
    }
    Ok(done.line(&shown))
}

/// Re-wraps data keys to the key `--to` names, or to each object's key's latest version.
struct Rewrapper {
    keys: Keys,
    fixed: Option<Arc<dyn KeyEncryptionKey>>,
    opts: OpenOptions,
}

/// The outcome of one object's rewrap.
enum Rewrapped {
    /// Already under the new key (its kid): left alone.
    Already(String),
    /// Re-wrapped from the old kid to the new one: the new metadata.
    New(String, String, EnvelopeMetadata),
}

impl Rewrapped {
    /// What `rewrap` prints for the object `shown`.
    fn line(&self, shown: &str) -> String {
        match self {
            Rewrapped::Already(kid) => format!("{shown}: {kid} (already under this key)"),
            Rewrapped::New(old, new, _) => format!("{shown}: {old} -> {new}"),
        }
    }
}

/// The keys of one object's rewrap, found (the key calls not yet made).
enum RewrapStep {
    /// Already under the new key (its kid).
    Already(String),
    /// The old kid, its key and the new key.
    Keys(String, Arc<dyn KeyEncryptionKey>, Arc<dyn KeyEncryptionKey>),
}

impl RewrapStep {
    /// Unwraps the data key with the old key, checking the integrity record for `name`, and
    /// wraps it with the new one.
    async fn finish(
        self,
        meta: &EnvelopeMetadata,
        name: &str,
        shown: &str,
        opts: &OpenOptions,
    ) -> Result<Rewrapped> {
        let (old_kid, old_key, new_key) = match self {
            RewrapStep::Already(kid) => return Ok(Rewrapped::Already(kid)),
            RewrapStep::Keys(old_kid, old_key, new_key) => (old_kid, old_key, new_key),
        };
        let new_meta = cmkvault_envelope::rewrap(
            KeySource::Key(old_key.as_ref()),
            new_key.as_ref(),
            meta,
            name,
            opts,
        )
        .await
        .with_context(|| format!("{shown} (object name {name:?})"))?;
        Ok(Rewrapped::New(old_kid, new_key.kid().to_string(), new_meta))
    }
}

impl Rewrapper {
    async fn new(args: &RewrapArgs) -> Result<Rewrapper> {
        let fixed = if args.to == "latest" {
            None
        } else {
            Some(load_key("--to", &args.to).await?)
        };
        Ok(Rewrapper {
            keys: Keys::new(args.key.as_deref(), &args.allow_key_host).await?,
            fixed,
            opts: OpenOptions {
                allow_legacy: args.allow_legacy,
                ..OpenOptions::default()
            },
        })
    }

    /// The key to wrap under for an object now under `old_kid`.
    async fn new_key(&mut self, old_kid: &str, shown: &str) -> Result<Arc<dyn KeyEncryptionKey>> {
        if let Some(k) = &self.fixed {
            return Ok(k.clone());
        }
        let Some(latest) = versionless(old_kid) else {
            bail!(
                "{shown}: the data key is wrapped under {old_kid}, not a vault key id: \
                 --to latest needs one (use --to KID)"
            );
        };
        self.keys
            .for_kid(&latest)
            .await
            .with_context(|| shown.to_owned())
    }

    /// The old and new keys of an object with metadata `meta` (nothing to do if it is already
    /// under the new key).
    async fn keys_for(&mut self, meta: &EnvelopeMetadata, shown: &str) -> Result<RewrapStep> {
        let envelope = Envelope::parse(meta, &self.opts).with_context(|| shown.to_owned())?;
        let old_kid = envelope.kid().to_string();
        let new_key = self.new_key(&old_kid, shown).await?;
        if new_key.kid() == old_kid {
            return Ok(RewrapStep::Already(old_kid));
        }
        let old_key = self
            .keys
            .for_kid(&old_kid)
            .await
            .with_context(|| shown.to_owned())?;
        Ok(RewrapStep::Keys(old_kid, old_key, new_key))
    }

    /// One object's new metadata: the data key unwrapped with its current key, its integrity
    /// record checked for `name`, wrapped under the new key (nothing to do if already there).
    async fn rewrap(
        &mut self,
        meta: &EnvelopeMetadata,
        name: &str,
        shown: &str,
    ) -> Result<Rewrapped> {
        let step = self.keys_for(meta, shown).await?;
        step.finish(meta, name, shown, &self.opts).await
    }
}
