//! podbed: create, list and remove CRI pods on the podscope test bed (testbed/podbed.sh).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use podscope_runtime::blocking::BlockingCriClient;
use podscope_runtime::cri::{ContainerSpec, PodSpec};
use podscope_runtime::names::closest_names;
use podscope_runtime::Pod;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(
    name = "podbed",
    about = "Create, list and remove pods through the CRI API of the podscope test bed"
)]
struct Cli {
    /// The CRI socket [default: $PODBED_SOCKET, else $PODBED_DIR/containerd.sock,
    /// else /run/podscope-testbed/containerd.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a pod sandbox with one container, start it, print it as JSON.
    RunPod {
        /// Pod name.
        #[arg(long)]
        name: String,
        /// Pod namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Pod uid [default: a new UUID].
        #[arg(long)]
        uid: Option<String>,
        /// Pod label KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Container image.
        #[arg(long, default_value = "localhost/busybox:latest")]
        image: String,
        /// Container name [default: the pod name].
        #[arg(long)]
        container_name: Option<String>,
        /// Container environment variable KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        envs: Vec<String>,
        /// Use the host's network namespace.
        #[arg(long)]
        host_network: bool,
        /// Bind-mount a host path into the container, HOST:PATH or
        /// HOST:PATH:ro (repeatable); e.g. /usr:/usr:ro to run the host's
        /// programs in the busybox image.
        #[arg(long = "mount", value_name = "HOST:PATH[:ro]")]
        mounts: Vec<String>,
        /// The container's command [default: the image's].
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print every pod as JSON.
    List,
    /// Remove the pods with this name and namespace, and their pod cgroups.
    RmPod {
        /// Pod name.
        #[arg(long)]
        name: String,
        /// Pod namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Remove every pod and its pod cgroup.
    RmAll,
    /// Run podscope's discovery (CRI, else /proc) and print what it found as JSON.
    /// Ignores --socket: give --endpoint, or none to try the well-known sockets.
    Discover {
        /// CRI endpoint (unix:///path or /path) [default: the well-known sockets, then /proc].
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// What discover prints.
#[derive(Serialize)]
struct DiscoverOutput<'a> {
    source: podscope_runtime::Source,
    endpoint: Option<&'a std::path::Path>,
    runtime: Option<&'a str>,
    warning: Option<&'a str>,
    pods: &'a [Pod],
}

/// What run-pod prints: flat, for shell scripts.
#[derive(Serialize)]
struct RunPodOutput<'a> {
    uid: &'a str,
    name: &'a str,
    namespace: &'a str,
    sandbox_id: Option<&'a str>,
    sandbox_pid: Option<u32>,
    container_id: &'a str,
    container_name: &'a str,
    pid: Option<u32>,
    cgroup_path: Option<&'a str>,
    cgroup_id: Option<u64>,
    pod_cgroup_path: Option<&'a str>,
    pod_cgroup_id: Option<u64>,
    ip: Option<&'a str>,
}

fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    if let Some(s) = std::env::var_os("PODBED_SOCKET") {
        return s.into();
    }
    let dir = std::env::var_os("PODBED_DIR").unwrap_or_else(|| "/run/podscope-testbed".into());
    PathBuf::from(dir).join("containerd.sock")
}

fn key_value(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("{what} {s:?} is not KEY=VALUE"),
    }
}

fn remove(client: &mut BlockingCriClient, pod: &Pod) -> Result<()> {
    let sid = pod
        .sandbox_id
        .as_deref()
        .context("pod without a sandbox id")?;
    client
        .remove_pod(sid, pod.cgroup_path.as_deref())
        .with_context(|| format!("removing pod {} (sandbox {sid})", pod.qualified_name()))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Discover { endpoint } = &cli.cmd {
        let d = podscope_runtime::discover_detailed(endpoint.as_deref())?;
        if let Some(w) = &d.warning {
            eprintln!("podbed: warning: {w}");
        }
        let out = DiscoverOutput {
            source: d.source,
            endpoint: d.endpoint.as_deref(),
            runtime: d.runtime.as_deref(),
            warning: d.warning.as_deref(),
            pods: &d.pods,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let socket = socket_path(&cli);
    let mut client = BlockingCriClient::connect(&socket).with_context(|| {
        format!(
            "is the test bed up? start it with: bash testbed/podbed.sh up (socket {})",
            socket.display()
        )
    })?;
    match cli.cmd {
        Cmd::RunPod {
            name,
            namespace,
            uid,
            labels,
            image,
            container_name,
            envs,
            host_network,
            mounts,
            command,
        } => {
            let mut spec = PodSpec::new(&name, &namespace)?;
            if let Some(uid) = uid {
                spec.uid = uid;
            }
            for l in &labels {
                let (k, v) = key_value(l, "label")?;
                spec.labels.insert(k, v);
            }
            spec.host_network = host_network;
            let base = socket
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| "/tmp".into());
            spec.log_directory = Some(
                base.join("pod-logs")
                    .join(format!("{namespace}_{name}_{}", spec.uid)),
            );
            let cname = container_name.unwrap_or_else(|| name.clone());
            let mut cspec = ContainerSpec::new(&cname, &image, &[]);
            cspec.command = command;
            for e in &envs {
                cspec.env.push(key_value(e, "env")?);
            }
            for m in &mounts {
                let (host, path, ro) = match m.split(':').collect::<Vec<_>>()[..] {
                    [h, p] => (h, p, false),
                    [h, p, "ro"] => (h, p, true),
                    _ => bail!("--mount {m:?} is not HOST:PATH or HOST:PATH:ro"),
                };
                if !host.starts_with('/') || !path.starts_with('/') {
                    bail!("--mount {m:?}: both paths must be absolute");
                }
                cspec = cspec.mount(host, path, ro);
            }
            let pod = client.run_pod(&spec, &[cspec])?;
            let c = pod
                .container(&cname)
                .with_context(|| format!("container {cname} missing from the new pod"))?;
            let out = RunPodOutput {
                uid: &pod.uid,
                name: &pod.name,
                namespace: &pod.namespace,
                sandbox_id: pod.sandbox_id.as_deref(),
                sandbox_pid: pod.sandbox_pid,
                container_id: &c.id,
                container_name: &c.name,
                pid: c.pid,
                cgroup_path: c.cgroup_path.as_deref(),
                cgroup_id: c.cgroup_id,
                pod_cgroup_path: pod.cgroup_path.as_deref(),
                pod_cgroup_id: pod.cgroup_id,
                ip: pod.ip.as_deref(),
            };
            println!("{}", serde_json::to_string(&out)?);
        }
        Cmd::List => {
            println!("{}", serde_json::to_string_pretty(&client.pods()?)?);
        }
        Cmd::RmPod { name, namespace } => {
            let pods = client.pods()?;
            let matching: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.name == name && p.namespace == namespace)
                .collect();
            if matching.is_empty() {
                let names: Vec<String> = pods.iter().map(Pod::qualified_name).collect();
                let wanted = format!("{namespace}/{name}");
                let close = closest_names(&wanted, names.iter().map(String::as_str), 3);
                if close.is_empty() {
                    bail!("no pod {wanted}");
                }
                bail!("no pod {wanted}; did you mean {}?", close.join(", "));
            }
            for p in matching {
                remove(&mut client, p)?;
                eprintln!("podbed: removed pod {}", p.qualified_name());
            }
        }
        Cmd::RmAll => {
            let pods = client.pods()?;
            // Stopped sandboxes of a pod uid that pods() folded away go too.
            let mut n = 0;
            for p in &pods {
                remove(&mut client, p)?;
                n += 1;
            }
            for s in client.list_pod_sandboxes()? {
                client.remove_pod(&s.id, None)?;
                n += 1;
            }
            eprintln!("podbed: removed {n} pod sandbox(es)");
        }
        Cmd::Discover { .. } => unreachable!("handled before connecting"),
    }
    Ok(())
}
