//! podscope: trace what the processes in pods, containers and on this machine
//! do in the kernel, live, with eBPF.

mod cgroup;
mod cli;
mod enrich;
mod exec;
mod output;
mod pods;
mod probes;
mod ps;
mod trace;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Probes { output } => probes::run(output),
        cli::Command::Trace(args) => trace::run(args),
        cli::Command::Ps(args) => ps::run(args),
        cli::Command::Exec(args) => match exec::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        cli::Command::Nsenter(args) => match exec::nsenter(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        eprintln!("podscope: error: {e:#}");
        std::process::exit(1);
    }
}
