//! podscope: trace what the processes in pods, containers and on this machine
//! do in the kernel, live, with eBPF.

mod accelerate;
mod cli;
mod exec;
mod hooks;
mod hostns;
mod probes;
mod ps;
mod top;
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
    let matches = command.get_matches_mut();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if matches!(
        cli.command,
        cli::Command::Trace(_)
            | cli::Command::Top(_)
            | cli::Command::Ps(_)
            | cli::Command::Exec(_)
            | cli::Command::Agent(_)
            | cli::Command::Ui(_)
            | cli::Command::Accelerate(_)
    ) {
        // Before any thread exists: namespaces are per thread, and threads
        // inherit them from the one that makes them.
        hostns::join_host_cgroup_namespace();
    }
    // --- cluster mode: `ps` and `trace` through the hub, `hub`, `agent` (docs/cluster.md) ---
    let hub = cli.hub.clone().or_else(|| {
        kubectl
            .then(|| podscope_cluster::kubeproxy::DEFAULT_HUB.to_string())
            .filter(|_| {
                matches!(
                    cli.command,
                    cli::Command::Ps(_)
                        | cli::Command::Trace(_)
                        | cli::Command::Top(_)
                        | cli::Command::Exec(_)
                        | cli::Command::Ui(_)
                )
            })
    });
    if hub.is_some() {
        if let Err(e) = refuse_node_only_flags(&command, &matches) {
            exit_on(Err(e));
        }
    }
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
        (None, cli::Command::Ui(args)) => {
            exit_on(podscope_cluster::hub::run_ui(args, token_file).map(|_| 0))
        }
        (Some(url), cli::Command::Ui(_)) => {
            exit_on(podscope_cluster::client::ui(&target(url)).map(|_| 0))
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
            // ftrace: entries go to the hub as they are; it refuses them
            // mixed with other probes, as a local trace does.
            let (tps, rest): (Vec<&str>, Vec<&str>) = args
                .probes
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .partition(|p| p.starts_with("tp:") || p.starts_with("tracepoint:"));
            let (syscalls, tracepoint) = exit_on_err(remote_hooks(&args, &tps, &rest));
            // --ring-buffer-size through the hub: the ftrace instances' size
            // (the agents size their BPF rings themselves).
            let ftraced = rest.iter().any(|p| p.starts_with("ftrace:"));
            if args.ring_buffer_size != 0 && !ftraced {
                exit_on_err::<()>(Err(anyhow::anyhow!(
                    "--ring-buffer-size is not supported through --hub except with ftrace: \
                     entries (it sizes their tracefs instance): the agents size their BPF \
                     rings themselves; run podscope trace --ring-buffer-size on the node"
                )));
            }
            let t = podscope_cluster::client::RemoteTrace {
                probes: rest.join(","),
                syscalls,
                tracepoint,
                pods: remote_pods(&args.pods),
                json: args.output == cli::TraceFormat::Json,
                quiet: args.output == cli::TraceFormat::None,
                duration: args.duration,
                max_events: args.max_events,
                wait: args.wait,
                otlp: args.otlp.enabled,
                ftrace_buffer_bytes: (args.ring_buffer_size != 0).then_some(args.ring_buffer_size),
                capture: (args.capture_headers
                    || args.capture_body.is_some()
                    || !args.redact_header.is_empty())
                .then(|| podscope_cluster::api::CaptureSettings {
                    headers: args.capture_headers,
                    body: args.capture_body.map(u64::from),
                    redact_header: args.redact_header.clone(),
                }),
            };
            exit_on(podscope_cluster::client::trace(&target(url), &t))
        }
        (Some(url), cli::Command::Top(args)) => {
            let pods = remote_pods(&args.pods);
            exit_on(top::run_remote(args, target(url), pods).map(|_| 0))
        }
        (Some(url), cli::Command::Exec(args)) => {
            let e = podscope_cluster::client::RemoteExec {
                pods: remote_pods(&args.pods),
                namespaces: args.namespaces.clone(),
                timeout: args.timeout,
                command: args.command.clone(),
            };
            exit_on(podscope_cluster::client::exec(&target(url), &e))
        }
        (Some(_), cli::Command::Accelerate(_)) => exit_on(Err(anyhow::anyhow!(
            "accelerate is a node command and does not go through --hub: run podscope accelerate \
             on the node whose pods should talk through the socket layer"
        ))),
        (_, other) => other,
    };
    // --- end cluster mode ---
    let result = match command {
        cli::Command::Probes {
            output,
            tracepoints: Some(glob),
        } => probes::tracepoints(&glob, output),
        cli::Command::Probes { output, .. } => probes::run(output),
        cli::Command::Hooks { output } => hooks::run(output),
        cli::Command::Trace(args) => trace::run(args),
        cli::Command::Ps(args) => ps::run(args),
        cli::Command::Accelerate(args) => accelerate::run(args),
        cli::Command::Top(args) => top::run(args),
        cli::Command::Exec(args) => match exec::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        cli::Command::Nsenter(args) => match exec::nsenter(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        cli::Command::Hub(_) | cli::Command::Agent(_) | cli::Command::Ui(_) => {
            unreachable!("handled above")
        }
    };
    if let Err(e) = result {
        eprintln!("podscope: error: {e:#}");
        std::process::exit(1);
    }
}

// --- cluster mode helpers ---

/// The flags of `trace`, `ps` and `exec` that work through the hub; every
/// other flag given on the command line is refused there, never silently
/// ignored (a flag added to the CLI is refused until the hub path honours it).
fn remote_flags(subcommand: &str) -> &'static [&'static str] {
    const PODS: [&str; 5] = [
        "pod",
        "namespace",
        "all_namespaces",
        "selector",
        "container",
    ];
    match subcommand {
        "trace" => &[
            "probes",
            PODS[0],
            PODS[1],
            PODS[2],
            PODS[3],
            PODS[4],
            "output",
            "duration",
            "max_events",
            "wait",
            "syscall",
            "errors_only",
            "summary",
            "interval",
            "filter",
            // With ftrace: entries, the nodes' instance buffer.
            "ring_buffer_size",
            "capture_headers",
            "capture_body",
            "redact_header",
            // --otlp: the agents export the session to their own endpoint.
            "enabled",
        ],
        "ps" => &[PODS[0], PODS[1], PODS[2], PODS[3], PODS[4], "output"],
        "top" => &[
            "probes",
            PODS[0],
            PODS[1],
            PODS[2],
            PODS[3],
            PODS[4],
            "output",
            "duration",
            "interval",
            "once",
            "containers",
        ],
        "exec" => &[
            PODS[0],
            PODS[1],
            PODS[2],
            PODS[3],
            PODS[4],
            "namespaces",
            "timeout",
            "command",
        ],
        _ => &[],
    }
}

/// What to do instead of a flag that only works on a node.
fn node_only_hint(subcommand: &str, id: &str, flag: &str) -> String {
    if subcommand == "ui" {
        return format!(
            "{flag} sets up the local web view (podscope ui without --hub); a hub serves its own \
             view at /ui/ on its port (its observer's probes: podscope hub --ui-probes)"
        );
    }
    match id {
        "pid" | "comm" | "cgroup" => format!(
            "{flag} is not supported through --hub: select pods with --pod/-l/-n (-A for every \
             namespace), or run podscope {subcommand} {flag} on the node"
        ),
        "all" => format!(
            "{flag} is not supported through --hub (it traces every process of one machine): \
             select pods with -A (every pod in every namespace), or run podscope trace --all on the node"
        ),
        "metrics_listen" | "metrics_grace" => format!(
            "{flag} is not supported through --hub: the agents serve per-pod metrics themselves \
             (podscope agent --metrics-listen ADDR, docs/metrics.md), or run podscope trace {flag} on the node"
        ),
        "enabled" | "endpoint" | "protocol" | "headers" | "logs" | "queue_size"
        | "session_events" | "ca" | "spans" | "span_children" => format!(
            "{flag} is not supported through --hub: the agents export OTLP themselves, each to \
             its own --otlp-endpoint (podscope agent --otlp-endpoint URL, docs/otlp.md); \
             `podscope --hub URL trace ... --otlp` asks them to export this session, \
             or run podscope trace {flag} on the node"
        ),
        "runtime_endpoint" => format!(
            "{flag} is not supported through --hub: each agent reads its own node's runtime \
             (podscope agent --runtime-endpoint ENDPOINT)"
        ),
        "output_dir" => format!(
            "{flag} works on the node only; through the hub the output comes back here"
        ),
        _ => format!(
            "{flag} is not supported through --hub: the agents' traces use their defaults; \
             run podscope {subcommand} {flag} on the node"
        ),
    }
}

/// Refuses, with what to do instead, every flag given to `trace`, `ps`, `top`, `ui` or
/// `exec` that the hub path would not honour.
fn refuse_node_only_flags(
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let Some(subcommand) = command.find_subcommand(name) else {
        return Ok(());
    };
    if !matches!(name, "trace" | "ps" | "exec" | "top" | "ui") {
        return Ok(());
    }
    let global: Vec<&str> = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .collect();
    let remote = remote_flags(name);
    for arg in subcommand.get_arguments() {
        let id = arg.get_id().as_str();
        if remote.contains(&id) || global.contains(&id) || id == "help" {
            continue;
        }
        if sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let flag = match (arg.get_long(), arg.get_short()) {
                (Some(l), _) => format!("--{l}"),
                (None, Some(s)) => format!("-{s}"),
                (None, None) => id.to_string(),
            };
            anyhow::bail!("{}", node_only_hint(name, id, &flag));
        }
    }
    Ok(())
}

/// The syscalls and tracepoint settings of a `--hub` trace, checked as a
/// local trace checks them (the nodes check the names: the hub's machine may
/// not be the nodes' architecture or kernel).
#[allow(clippy::type_complexity)]
fn remote_hooks(
    args: &cli::TraceArgs,
    tps: &[&str],
    probes: &[&str],
) -> anyhow::Result<(
    Option<podscope_cluster::api::SyscallsHook>,
    Option<podscope_cluster::api::TracepointHook>,
)> {
    let syscalls_asked = probes.iter().any(|p| *p == "syscalls" || *p == "all");
    let interval_given = args.interval != std::time::Duration::from_secs(1);
    if (!args.syscall.is_empty() || args.errors_only || args.summary) && !syscalls_asked {
        anyhow::bail!("--syscall, --errors-only and --summary are settings of the syscalls probe: add it (podscope trace syscalls ...)");
    }
    if interval_given && !args.summary {
        anyhow::bail!(
            "--interval is not supported through --hub except with --summary (the syscall \
             totals' period): the agents report other aggregates every second; run podscope \
             trace --interval on the node"
        );
    }
    let ftraced = probes.iter().any(|p| p.starts_with("ftrace:"));
    if args.filter.is_some() && tps.is_empty() && !ftraced {
        anyhow::bail!("--filter compares tracepoint fields: add a tracepoint (podscope trace tp:SUBSYSTEM:EVENT --filter ...)");
    }
    if let Some(f) = &args.filter {
        podscope_bpf::tracepoint::filter::parse(f).map_err(|e| anyhow::anyhow!(e))?;
    }
    let syscalls = (!args.syscall.is_empty() || args.errors_only || args.summary).then(|| {
        podscope_cluster::api::SyscallsHook {
            syscall: args.syscall.clone(),
            errors_only: args.errors_only,
            summary: args.summary,
            interval: interval_given.then(|| humantime::format_duration(args.interval).to_string()),
        }
    });
    // With ftrace: entries, a tracepoint hook without names carries their
    // filter (the hub refuses ftrace mixed with tp: names).
    let tracepoint = (!tps.is_empty() || (ftraced && args.filter.is_some())).then(|| {
        podscope_cluster::api::TracepointHook {
            name: tps.iter().map(|t| t.to_string()).collect(),
            filter: args.filter.clone(),
        }
    });
    Ok((syscalls, tracepoint))
}

fn exit_on_err<T>(r: anyhow::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("podscope: error: {e:#}");
            std::process::exit(1);
        }
    }
}

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
    p.flags()
}
// --- end cluster mode helpers ---
