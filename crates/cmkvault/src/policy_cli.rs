//! `cmkvault policy list|show`: the built-in rule pack (the MIT Azure Policy built-ins and
//! cmkvault's own CMK rules).

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use clap::Subcommand;
use cmkvault_policy::pack::{DefinitionKind, Pack};

/// `cmkvault policy` subcommands.
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// List the definitions of the built-in rule pack: name, kind, default effect, source
    /// (builtin or cmkvault) and display name.
    List,
    /// Print a definition of the built-in rule pack as JSON, as published.
    Show {
        /// The definition's name (a GUID for built-ins, cmkvault-… for ours), id or file name.
        name: String,
    },
}

pub(crate) fn run(command: PolicyCommand) -> Result<()> {
    let pack = Pack::builtin().context("the built-in rule pack does not load")?;
    let mut out = std::io::stdout().lock();
    match command {
        PolicyCommand::List => {
            out.write_all(list_table(&pack, terminal_width()).as_bytes())?;
        }
        PolicyCommand::Show { name } => {
            let def = pack.find(&name).with_context(|| {
                format!(
                    "policy {name:?}: no such definition in the built-in rule pack (`cmkvault policy list` shows the names)"
                )
            })?;
            out.write_all(def.text.as_bytes())?;
            if !def.text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The width of the terminal on standard output (its size, else `COLUMNS`); `None` when
/// standard output is not a terminal (a pipe or a file gets full lines).
pub(crate) fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_rows, cols)| usize::from(cols))
        .filter(|c| *c > 0)
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
}

/// `NAME  KIND  EFFECT  SOURCE  DISPLAY NAME`, one line per document; the display name is cut
/// with `…` to fit `width` when given (a terminal).
fn list_table(pack: &Pack, width: Option<usize>) -> String {
    let rows: Vec<[String; 5]> = pack
        .definitions()
        .iter()
        .map(|d| {
            [
                d.name.clone(),
                match d.kind {
                    DefinitionKind::Policy => "policy".to_string(),
                    DefinitionKind::Initiative => "initiative".to_string(),
                },
                d.default_effect.clone().unwrap_or_else(|| "-".into()),
                d.source.as_str().to_string(),
                d.display_name.clone(),
            ]
        })
        .collect();
    let headers = ["NAME", "KIND", "EFFECT", "SOURCE", "DISPLAY NAME"];
    let w = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([headers[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
    let room = width.map(|t| t.saturating_sub(w0 + w1 + w2 + w3 + 8).max(10));
    let mut s = String::new();
    let mut line = |c: [&str; 5]| {
        let last = match room {
            Some(r) if c[4].chars().count() > r => {
                let mut cut: String = c[4].chars().take(r.saturating_sub(1)).collect();
                cut.push('…');
                cut
            }
            _ => c[4].to_string(),
        };
        s.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {last}\n",
            c[0], c[1], c[2], c[3]
        ));
    };
    line(headers);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    s
}
