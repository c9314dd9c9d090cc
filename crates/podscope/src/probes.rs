//! `podscope probes`: the probe catalogue and what this kernel supports.

use anyhow::Result;
use podscope_bpf::{probe_support, ProbeSupport};
use podscope_model::ProbeKind;
use serde::Serialize;

use crate::cli::Format;

#[derive(Serialize)]
struct Row {
    probe: ProbeKind,
    supported: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    description: &'static str,
    hooks: Vec<String>,
}

pub fn run(format: Format) -> Result<()> {
    let rows: Vec<Row> = ProbeKind::ALL
        .iter()
        .map(|p| {
            let support = probe_support(*p);
            Row {
                probe: *p,
                supported: support == ProbeSupport::Supported,
                reason: match support {
                    ProbeSupport::Supported => None,
                    ProbeSupport::Unsupported(r) => Some(r),
                },
                description: p.description(),
                hooks: p.hooks().iter().map(|h| h.describe()).collect(),
            }
        })
        .collect();
    match format {
        Format::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Format::Columns => {
            println!("{:<6} {:<10} DESCRIPTION", "PROBE", "SUPPORTED");
            for r in &rows {
                let supported = if r.supported { "yes" } else { "NO" };
                println!("{:<6} {:<10} {}", r.probe.name(), supported, r.description);
                println!("{:<17} hooks: {}", "", r.hooks.join(", "));
                if let Some(reason) = &r.reason {
                    println!("{:<17} why not: {reason}", "");
                }
            }
        }
    }
    Ok(())
}
