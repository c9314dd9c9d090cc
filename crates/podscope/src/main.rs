//! podscope: trace what the processes in pods, containers and on this machine
//! do in the kernel, live, with eBPF.

mod cgroup;
mod cli;
mod output;
mod probes;
mod trace;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Probes { output } => probes::run(output),
        cli::Command::Trace(args) => trace::run(args),
    };
    if let Err(e) = result {
        eprintln!("podscope: error: {e:#}");
        std::process::exit(1);
    }
}
