//! `podscope hooks`: the hook kinds a trace session can use and their
//! arguments, from the one catalogue in podscope-model.

use std::io::Write;

use anyhow::Result;
use podscope_model::hooks::hook_kinds;

use crate::cli::Format;

pub fn run(format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let r = (|| -> std::io::Result<()> {
        for h in hook_kinds() {
            match format {
                Format::Json => writeln!(out, "{}", serde_json::to_string(&h)?)?,
                Format::Columns => {
                    writeln!(out, "{:<11} {}", h.kind, h.description)?;
                    writeln!(out, "{:<11} usage: {}", "", h.usage)?;
                    for a in h.args {
                        writeln!(
                            out,
                            "{:<11}   {:<13} {:<12} {}{} (e.g. {}; {})",
                            "",
                            a.name,
                            a.ty.name(),
                            if a.required { "required: " } else { "" },
                            a.description,
                            a.example,
                            a.flag
                        )?;
                    }
                }
            }
        }
        out.flush()
    })();
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
