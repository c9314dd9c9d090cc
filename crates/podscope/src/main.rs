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

use clap::{CommandFactory, FromArgMatches};

fn main() {
    // `kubectl podscope ...` runs this binary as `kubectl-podscope`: ps and
    // trace then go to the hub through the API server unless --hub says otherwise.
    let kubectl = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .is_some_and(|name| name == "kubectl-podscope");
    let mut command = cli::Cli::command();
    if kubectl {
        command = command.bin_name("kubectl podscope");
    }
    let cli = cli::Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    if matches!(
        cli.command,
        cli::Command::Trace(_)
            | cli::Command::Ps(_)
            | cli::Command::Exec(_)
            | cli::Command::Agent(_)
    ) {
        // Before any thread exists: namespaces are per thread, and threads
        // inherit them from the one that makes them.
        cgroup::join_host_cgroup_namespace();
    }
    // --- cluster mode: `ps` and `trace` through the hub, `hub`, `agent` (docs/cluster.md) ---
    let hub = cli.hub.clone().or_else(|| {
        kubectl
            .then(|| podscope_cluster::kubeproxy::DEFAULT_HUB.to_string())
            .filter(|_| {
                matches!(
                    cli.command,
                    cli::Command::Ps(_) | cli::Command::Trace(_) | cli::Command::Exec(_)
                )
            })
    });
    let token_file = cli.token_file.clone();
    let tls_ca = cli.tls_ca.clone();
    let target = |url: &str| podscope_cluster::client::HubTarget {
        url: url.to_string(),
        token_file: token_file.clone(),
        tls_ca: tls_ca.clone(),
        api: cli.hub_api,
        kube: podscope_cluster::kubeproxy::KubeOptions {
            kubeconfig: cli.kubeconfig.clone(),
            context: cli.context.clone(),
        },
    };
    let command = match (hub.as_deref(), cli.command) {
        (_, cli::Command::Hub(args)) => {
            exit_on(podscope_cluster::hub::run(args, token_file).map(|_| 0))
        }
        (_, cli::Command::Agent(args)) => {
            exit_on(podscope_cluster::agent::run(args, hub, token_file, tls_ca).map(|_| 0))
        }
        (Some(url), cli::Command::Ps(args)) => exit_on(
            podscope_cluster::client::ps(
                &target(url),
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
            exit_on(podscope_cluster::client::trace(&target(url), &t))
        }
        (Some(url), cli::Command::Exec(args)) => {
            if args.output_dir.is_some() {
                exit_on(Err(anyhow::anyhow!(
                    "--output-dir works on the node only; through the hub the output comes back here"
                )));
            }
            let e = podscope_cluster::client::RemoteExec {
                pods: remote_pods(&args.pods),
                namespaces: args.namespaces.clone(),
                timeout: args.timeout,
                command: args.command.clone(),
            };
            exit_on(podscope_cluster::client::exec(&target(url), &e))
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
