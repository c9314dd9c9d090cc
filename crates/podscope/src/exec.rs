//! `podscope exec`: run a host tool inside a pod's namespaces.

use anyhow::{bail, Result};

use crate::cli::{ExecArgs, NsenterArgs};

/// Runs the command in every chosen pod; returns the exit code to use.
pub fn run(_args: ExecArgs) -> Result<i32> {
    bail!("podscope exec is not implemented yet")
}

/// The child side: join namespaces, then run the command.
pub fn nsenter(_args: NsenterArgs) -> Result<i32> {
    bail!("not implemented yet")
}
