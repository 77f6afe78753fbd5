//! `cmkvault scan`: evaluates Azure Policy definitions (by default the built-in CMK rule pack)
//! offline over inventories, ARM templates and the live vault, and reports the results as a
//! table, `az policy state list`-shaped JSON or SARIF. Exit code: 0, or 1 when a Deny-effect
//! result is NonCompliant (a CI gate), or 2 on a usage or input error.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use cmkvault_policy::pack::{DefinitionKind, Pack, PackSource};
use cmkvault_policy::report::{self, Format};
use cmkvault_policy::template::{is_parameter_file, is_template};
use cmkvault_policy::{
    parse_document, Assignment, Engine, EngineOptions, Exemptions, PolicyDocument, Resource,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

mod vault;

/// Parameter values the default pack uses for built-ins that declare no default: RSA keys of
/// at least 2048 bits, rotation scheduled within 365 days. An `--assignment` overrides them.
const DEFAULT_PARAMETERS: &[(&str, i64)] =
    &[("minimumRSAKeySize", 2048), ("maximumDaysToRotate", 365)];

/// Resources above which a progress bar is shown on a terminal.
const PROGRESS_THRESHOLD: usize = 10_000;

/// `cmkvault scan`.
#[derive(Args)]
#[command(after_help = "\
INPUT: an inventory (Resource Graph export, `az resource show` / `az resource list` JSON: an \
array, {\"data\": [...]}, {\"value\": [...]} or one resource), an ARM template, or an ARM \
parameter file (applied to the template given with it: to the only template, else to the \
template whose file name it starts with, as azuredeploy.parameters.json goes with \
azuredeploy.json). Directories are searched for *.json files.

Policies: the built-in rule pack (`cmkvault policy list`) unless --policy is given. The pack's \
built-ins that declare no default get minimumRSAKeySize=2048 and maximumDaysToRotate=365 unless \
--assignment sets them.

Exit status: 0 when no Deny-effect result is NonCompliant, 1 when one is, 2 on a usage or \
input error.")]
pub(crate) struct ScanArgs {
    /// Inventories, ARM templates and parameter files (or directories of them).
    #[arg(value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Policy definition or initiative files (or directories of them), instead of the built-in
    /// pack (repeatable).
    #[arg(long = "policy", value_name = "FILE|DIR")]
    policies: Vec<PathBuf>,
    /// A policy assignment (parameter values, `az policy assignment show` shape or a map).
    #[arg(long, value_name = "FILE")]
    assignment: Option<PathBuf>,
    /// Policy exemptions (see docs/policy-pack.md).
    #[arg(long, value_name = "FILE")]
    exemptions: Option<PathBuf>,
    /// Also read the vaults and keys of this cmkvault server (token from CMKVAULT_TOKEN).
    #[arg(long, value_name = "URL")]
    vault: Option<String>,
    /// CA certificate to trust with --vault (default: DATA/tls/ca.pem).
    #[arg(long, env = "CMKVAULT_CA")]
    ca: Option<PathBuf>,
    /// Data directory whose tls/ca.pem is trusted with --vault.
    #[arg(long, env = "CMKVAULT_DATA", default_value = "./cmkvault-data")]
    data: PathBuf,
    /// Output format: table, json or sarif.
    #[arg(long, default_value = "table", value_name = "table|json|sarif")]
    format: String,
    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `scan`; `Ok(code)` is the exit status (0 or 1), `Err` an input or usage error (2).
pub(crate) async fn run(args: ScanArgs) -> Result<u8> {
    let format: Format = args
        .format
        .parse()
        .map_err(|e: String| anyhow!("--format: {e}"))?;
    if args.inputs.is_empty() && args.vault.is_none() {
        bail!("nothing to scan: give INPUT files or --vault URL");
    }
    let (pack, engine) = build_engine(&args.policies, args.assignment.as_deref())?;
    for w in engine.warnings() {
        eprintln!("warning: {w}");
    }
    let mut resources = load_inputs(&args.inputs)?;
    if let Some(url) = &args.vault {
        let ca = args
            .ca
            .clone()
            .unwrap_or_else(|| args.data.join("tls").join("ca.pem"));
        let token = std::env::var("CMKVAULT_TOKEN").unwrap_or_default();
        if token.trim().is_empty() {
            bail!("--vault: CMKVAULT_TOKEN is not set (export CMKVAULT_TOKEN=$(cmkvault token --data DIR))");
        }
        for body in vault::read_vault(url, &ca, token.trim()).await? {
            resources.push(Resource::from_body(body));
        }
    }
    let bar = progress(
        resources.len(),
        args.output.is_none() && format == Format::Table,
    );
    let bar2 = bar.clone();
    let mut outcomes = tokio::task::block_in_place(|| {
        engine.evaluate_with_progress(&resources, &|n| bar2.inc(n as u64))
    });
    bar.finish_and_clear();
    if let Some(path) = &args.exemptions {
        let text = read(path)?;
        let exemptions = Exemptions::parse(&text, &path.display().to_string())?;
        for notice in exemptions.apply(&mut outcomes, SystemTime::now()) {
            eprintln!("warning: {notice}");
        }
    }
    let width = crate::policy_cli::terminal_width().unwrap_or(report::DEFAULT_TABLE_WIDTH);
    let text = report::render(
        format,
        &outcomes,
        &pack.rule_meta(),
        env!("CARGO_PKG_VERSION"),
        width,
    );
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("{}: cannot write", path.display()))?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    if format != Format::Table || args.output.is_some() {
        eprintln!("{}", report::summary_line(&outcomes));
    }
    Ok(u8::try_from(report::exit_code(&outcomes)).unwrap_or(1))
}

/// The policies (`--policy` files, else the built-in pack) compiled into an engine, with the
/// assignment's parameter values.
pub(crate) fn build_engine(
    policies: &[PathBuf],
    assignment_file: Option<&Path>,
) -> Result<(Pack, Engine)> {
    let pack = load_pack(policies)?;
    let documents = pack
        .definitions()
        .iter()
        // The default pack's initiative re-assigns built-ins already in it (with effect Deny):
        // it is evaluated only when given with --policy.
        .filter(|d| !policies.is_empty() || d.kind != DefinitionKind::Initiative)
        .map(|d| parse_document(&d.json, &d.file).map_err(anyhow::Error::from))
        .collect::<Result<Vec<PolicyDocument>>>()?;
    let assignment = assignment(assignment_file, &documents, policies.is_empty())?;
    let engine = Engine::new(documents, assignment.as_ref(), EngineOptions::default())?;
    Ok((pack, engine))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// The `*.json` files named by `paths` (directories searched, sorted).
fn json_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}: cannot read", p.display()))?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut stack = vec![p.clone()];
        let mut found = Vec::new();
        while let Some(d) = stack.pop() {
            for e in
                std::fs::read_dir(&d).with_context(|| format!("{}: cannot list", d.display()))?
            {
                let e = e.with_context(|| format!("{}: cannot list", d.display()))?;
                let path = e.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("json"))
                {
                    found.push(path);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// The policies: the built-in pack, or the `--policy` files.
fn load_pack(paths: &[PathBuf]) -> Result<Pack> {
    if paths.is_empty() {
        return Ok(Pack::builtin()?);
    }
    let files = json_files(paths)?;
    if files.is_empty() {
        bail!("--policy: no *.json files found");
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| Ok((f.display().to_string(), read(f)?)))
        .collect::<Result<_>>()?;
    let pairs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Ok(Pack::from_files(&pairs, PackSource::User)?)
}

/// The assignment: `--assignment`, plus (for the default pack) values for the built-ins'
/// parameters without a default.
fn assignment(
    path: Option<&Path>,
    documents: &[PolicyDocument],
    default_pack: bool,
) -> Result<Option<Assignment>> {
    let mut assignment = match path {
        Some(p) => {
            let text = read(p)?;
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", p.display()))?;
            Some(Assignment::parse(&json, &p.display().to_string())?)
        }
        None => None,
    };
    if default_pack {
        let declared = |name: &str| {
            documents
                .iter()
                .any(|d| d.parameters().iter().any(|p| p.name == name))
        };
        let a = assignment.get_or_insert_with(|| Assignment::from_parameters(Map::new()));
        for (name, value) in DEFAULT_PARAMETERS {
            if declared(name) && !a.parameters.contains_key(*name) {
                a.parameters
                    .insert((*name).to_string(), Value::from(*value));
            }
        }
    }
    Ok(assignment)
}

/// Reads every input: parameter files are paired with templates; everything else is loaded
/// by shape.
fn load_inputs(paths: &[PathBuf]) -> Result<Vec<Resource>> {
    let files = json_files(paths)?;
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = read(f)?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        texts.push((f.display().to_string(), text, json));
    }
    let is_params = |j: &Option<Value>| j.as_ref().is_some_and(is_parameter_file);
    let templates: Vec<&str> = texts
        .iter()
        .filter(|(_, _, j)| j.as_ref().is_some_and(is_template))
        .map(|(n, _, _)| n.as_str())
        .collect();
    // Parameter file → the template it goes with.
    let mut params_for: std::collections::HashMap<String, (String, String)> = Default::default();
    for (name, text, json) in &texts {
        if !is_params(json) {
            continue;
        }
        let target = match templates.as_slice() {
            [only] => Some(only.to_string()),
            many => {
                let stem = Path::new(name)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .unwrap_or("");
                many.iter()
                    .find(|t| {
                        Path::new(t)
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .is_some_and(|s| s == stem)
                    })
                    .map(|t| t.to_string())
            }
        };
        let Some(target) = target else {
            bail!(
                "{name}: a parameter file with no template to apply it to (give the template too)"
            );
        };
        if params_for
            .insert(target.clone(), (text.clone(), name.clone()))
            .is_some()
        {
            bail!("{target}: two parameter files apply to this template");
        }
    }
    let mut resources = Vec::new();
    for (name, text, json) in &texts {
        if is_params(json) {
            continue;
        }
        let params = params_for.get(name).map(|(t, n)| (t.as_str(), n.as_str()));
        let loaded = cmkvault_policy::load_input_with(text, name, params, &Default::default())?;
        for note in &loaded.notes {
            eprintln!("note: {note}");
        }
        resources.extend(loaded.resources);
    }
    Ok(resources)
}

/// A progress bar on stderr for large inventories when it is a terminal.
fn progress(total: usize, _table_on_stdout: bool) -> ProgressBar {
    use std::io::IsTerminal;
    if total < PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{wide_bar} {pos}/{len} resources ETA {eta}") {
        bar.set_style(style);
    }
    bar
}
