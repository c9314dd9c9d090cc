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
    // --- cluster mode: `ps` and `trace` through the hub, `hub`, `agent` (docs/cluster.md) ---
    let (hub, token_file) = (cli.hub.clone(), cli.token_file.clone());
    let tls_ca = cli.tls_ca.clone();
    let command = match (hub.as_deref(), cli.command) {
        (_, cli::Command::Hub(args)) => {
            exit_on(podscope_cluster::hub::run(args, token_file).map(|_| 0))
        }
        (_, cli::Command::Agent(args)) => {
            exit_on(podscope_cluster::agent::run(args, hub, token_file, tls_ca).map(|_| 0))
        }
        (Some(url), cli::Command::Ps(args)) => exit_on(
            podscope_cluster::client::ps(
                url,
                token_file,
                tls_ca,
                &remote_pods(&args.pods),
                args.output == cli::Format::Json,
            )
            .map(|_| 0),
        ),
        (Some(url), cli::Command::Trace(args)) => {
            let t = podscope_cluster::client::RemoteTrace {
                probes: args.probes.clone(),
                pods: remote_pods(&args.pods),
                json: args.output == cli::TraceFormat::Json,
                quiet: args.output == cli::TraceFormat::None,
                duration: args.duration,
                max_events: args.max_events,
            };
            exit_on(podscope_cluster::client::trace(url, token_file, tls_ca, &t))
        }
        (_, other) => other,
    };
    // --- end cluster mode ---
    let result = match command {
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
        cli::Command::Hub(_) | cli::Command::Agent(_) => unreachable!("handled above"),
    };
    if let Err(e) = result {
        eprintln!("podscope: error: {e:#}");
        std::process::exit(1);
    }
}

// --- cluster mode helpers ---
fn exit_on(r: anyhow::Result<i32>) -> ! {
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("podscope: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn remote_pods(p: &cli::PodArgs) -> podscope_cluster::client::RemotePods {
    podscope_cluster::client::RemotePods {
        pod: p.pod.clone(),
        namespace: p.namespace.clone(),
        all_namespaces: p.all_namespaces,
        selector: p.selector.clone(),
        container: p.container.clone(),
    }
}
// --- end cluster mode helpers ---
