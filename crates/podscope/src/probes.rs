//! `podscope probes`: the probe catalogue, and which implementation of each
//! probe this kernel will run (found by loading it, as a trace would).

use anyhow::{bail, Result};
use podscope_bpf::implementation_support;
use podscope_model::ProbeKind;
use serde::Serialize;

use crate::cli::Format;

#[derive(Serialize)]
struct Row {
    probe: ProbeKind,
    supported: bool,
    /// The implementation a trace will use here.
    #[serde(skip_serializing_if = "Option::is_none")]
    implementation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    description: &'static str,
    /// The hooks of the implementation used (or of every implementation,
    /// when none can run).
    hooks: Vec<String>,
    /// Every implementation, best first, and why each is or is not used.
    implementations: Vec<ImplRow>,
}

#[derive(Serialize)]
struct ImplRow {
    name: &'static str,
    hooks: Vec<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    note: &'static str,
    /// `used`, `available` (a better one is used), or why not.
    status: String,
}

pub fn run(format: Format) -> Result<()> {
    // Without the privilege to load BPF nothing can be known for sure; say so
    // instead of blaming tracefs or the kernel.
    let privileged = podscope_bpf::check_privileges();
    let rows: Vec<Row> = ProbeKind::ALL
        .iter()
        .map(|p| {
            let used = match &privileged {
                Ok(()) => podscope_pipeline::probes::trial_load(*p),
                Err(e) => Err(format!("not checked: {e}")),
            };
            // Implementations are tried best first: one before the used one
            // whose hooks exist was refused; one after it was not needed.
            let used_at = used
                .as_ref()
                .ok()
                .and_then(|u| p.implementations().iter().position(|i| i.name == u.name));
            let implementations: Vec<ImplRow> = p
                .implementations()
                .iter()
                .enumerate()
                .map(|(at, imp)| ImplRow {
                    name: imp.name,
                    hooks: imp.hooks.iter().map(|h| h.describe()).collect(),
                    note: imp.note,
                    // Without privileges tracefs is unreadable too: say
                    // nothing rather than blame it.
                    status: if privileged.is_err() {
                        "not checked (needs root)".into()
                    } else {
                        match (used_at, implementation_support(imp)) {
                            (Some(u), _) if u == at => "used".into(),
                            (_, Err(why)) => why,
                            (Some(u), Ok(())) if at > u => {
                                "available (a better one is used)".into()
                            }
                            (_, Ok(())) => {
                                "hooks present, but the kernel refused the program".into()
                            }
                        }
                    },
                })
                .collect();
            let (implementation, reason) = match &used {
                Ok(imp) => (Some(imp.name), None),
                Err(why) => (None, Some(why.clone())),
            };
            Row {
                probe: *p,
                supported: used.is_ok(),
                implementation,
                reason,
                description: p.description(),
                hooks: match &used {
                    Ok(imp) => imp.hooks.iter().map(|h| h.describe()).collect(),
                    Err(_) => p.hooks().iter().map(|h| h.describe()).collect(),
                },
                implementations,
            }
        })
        .collect();
    // `podscope probes | head` closes the pipe early: not an error.
    match print_rows(&rows, format, privileged.is_ok()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    if let Err(e) = privileged {
        bail!("could not check what this kernel runs: {e}");
    }
    Ok(())
}

fn print_rows(rows: &[Row], format: Format, privileged: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            for r in rows {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        Format::Columns => {
            writeln!(
                out,
                "{:<6} {:<10} {:<15} DESCRIPTION",
                "PROBE", "SUPPORTED", "IMPLEMENTATION"
            )?;
            for r in rows {
                let supported = match (privileged, r.supported) {
                    (false, _) => "?",
                    (true, true) => "yes",
                    (true, false) => "NO",
                };
                writeln!(
                    out,
                    "{:<6} {:<10} {:<15} {}",
                    r.probe.name(),
                    supported,
                    r.implementation.unwrap_or("-"),
                    r.description
                )?;
                writeln!(out, "{:<33} hooks: {}", "", r.hooks.join(", "))?;
                for imp in r
                    .implementations
                    .iter()
                    .filter(|i| i.status != "used" && privileged)
                {
                    writeln!(out, "{:<33} {}: {}", "", imp.name, imp.status)?;
                }
                if let (Some(reason), true) = (&r.reason, privileged) {
                    writeln!(out, "{:<33} why not: {reason}", "")?;
                }
            }
        }
    }
    out.flush()
}

#[derive(Serialize)]
struct TracepointRow {
    tracepoint: String,
    id: u32,
    fields: Vec<FieldRow>,
}

#[derive(Serialize)]
struct FieldRow {
    name: String,
    #[serde(rename = "type")]
    ctype: String,
    offset: usize,
    size: usize,
    signed: bool,
    /// How `trace tp:...` shows it: int, string, pointer, array.
    shown_as: &'static str,
    /// `--filter` can compare it in the kernel.
    filterable: bool,
}

/// `podscope probes --tracepoints GLOB`: this kernel's tracepoints and the
/// fields `trace tp:SUBSYSTEM:EVENT` decodes.
pub fn tracepoints(glob: &str, format: Format) -> Result<()> {
    use podscope_bpf::tracepoint::{available, format_of, FieldKind};
    use std::io::Write;
    podscope_bpf::check_privileges()?;
    let glob = glob.strip_prefix("tp:").unwrap_or(glob);
    let names: Vec<String> = available()?
        .into_iter()
        .filter(|n| podscope_runtime::names::glob_match(glob, n))
        .collect();
    if names.is_empty() {
        bail!(
            "no tracepoint matches '{glob}'; tracepoints are SUBSYSTEM:EVENT, e.g. 'sched:*' or '*:*xmit*' \
             (podscope probes --tracepoints lists all)"
        );
    }
    let mut out = std::io::stdout().lock();
    let result = (|| -> std::io::Result<()> {
        for n in &names {
            // A format that cannot be read (permissions, an odd line) is
            // listed with why, not dropped.
            let f = match format_of(n) {
                Ok(f) => f,
                Err(e) => {
                    match format {
                        Format::Json => writeln!(
                            out,
                            "{}",
                            serde_json::json!({"tracepoint": n, "error": e.to_string()})
                        )?,
                        Format::Columns => writeln!(out, "tp:{n}  (cannot read its format: {e})")?,
                    }
                    continue;
                }
            };
            let fields: Vec<FieldRow> = f
                .fields
                .iter()
                .map(|x| FieldRow {
                    name: x.name.clone(),
                    ctype: x.ctype.clone(),
                    offset: x.offset,
                    size: x.size,
                    signed: x.signed,
                    shown_as: match x.kind {
                        FieldKind::Int => "int",
                        FieldKind::Pointer => "pointer",
                        FieldKind::Array { .. } => "array",
                        FieldKind::DataLoc { chars: false, .. }
                        | FieldKind::RelLoc { chars: false, .. } => "array",
                        _ => "string",
                    },
                    filterable: x.is_string()
                        || matches!(x.kind, FieldKind::Int | FieldKind::Pointer),
                })
                .collect();
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&TracepointRow {
                        tracepoint: f.name.clone(),
                        id: f.id,
                        fields,
                    })?
                )?,
                Format::Columns => {
                    let list: Vec<String> = f.fields.iter().map(|x| x.describe()).collect();
                    writeln!(out, "tp:{}  {}", f.name, list.join("; "))?;
                }
            }
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
