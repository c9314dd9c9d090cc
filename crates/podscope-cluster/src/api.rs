//! The REST API's request and response types, their validation, and pod
//! selection (kubectl semantics, as `podscope trace` applies them on a node).

use std::collections::BTreeMap;
use std::time::Duration;

use podscope_model::ProbeKind;
use podscope_runtime::names::{closest_names, glob_match};
use podscope_runtime::{Pod, Selector, Source};
use serde::{Deserialize, Serialize};

/// The namespace used when neither `namespace` nor `all_namespaces` is given (as kubectl).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The longest session a request may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Namespace of the pods (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pods in every namespace.
    #[serde(default)]
    pub all_namespaces: bool,
    /// Pod name or glob (`web-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Container name or glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Label selector (`app=web,tier!=db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Probe names, or `["all"]`, and tracepoints as `tp:SUBSYSTEM:EVENT`
    /// (may be left out when a hook is given).
    #[serde(default)]
    pub probes: Vec<String>,
    /// Stop after this long (`60s`, `5m`; at most 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Start at once (default true); false creates it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<bool>,
    /// Whether a selection that matches no pod on any node may wait for one
    /// (default true); false: such a request is refused (404) with the
    /// pods that do exist and the closest names, as `podscope trace` does on
    /// a node (the CLI sends false unless --wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// A hook with arguments (`GET /v1/hooks` lists the kinds), e.g.
    /// `{"kind": "syscalls", "args": {"syscall": ["openat"], "errors_only": true}}`
    /// or `{"kind": "tracepoint", "args": {"name": ["sched:sched_process_fork"]}}`.
    /// Added to `probes` (which may then be left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookRequest>,
    /// Several hooks, as `hook`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookRequest>,
    /// The syscalls hook's arguments as a typed object (the same as a
    /// `hook` of kind `syscalls`; what the CLI and gRPC send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallsHook>,
    /// The tracepoint hook's arguments as a typed object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<TracepointHook>,
    /// The agents also export the session over OTLP, each to its own
    /// `--otlp-endpoint` (`podscope agent --otlp-endpoint URL`): a session
    /// span per node (`podscope.session.id`), connection and request spans
    /// as a local `trace --otlp-endpoint` makes them, and syscall and
    /// tracepoint records as log records in the session span's context
    /// (container-tracer's span per session). A node whose agent has no
    /// endpoint fails the session with the reason.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub otlp: bool,
    /// With `ftrace:` entries: each node's tracefs instance buffer per CPU
    /// (`64M`: bytes or K/M/G, a power of two from 4K to 1G, as the local
    /// `--ring-buffer-size`); default ftrace's own (1408 KiB). Also the
    /// `ftrace` hook's `buffer_size` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftrace_buffer_size: Option<String>,
    /// With http, grpc or tls: headers and body bytes kept in the request
    /// events (`--capture-headers`, `--capture-body`, `--redact-header`;
    /// credentials redacted on the node, docs/probes.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureSettings>,
}

/// What a session's request events keep beyond their default fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// Keep request and response headers (credential values `[redacted]`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub headers: bool,
    /// Keep the first this many bytes of each HTTP/1 body (1..16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<u64>,
    /// More header names whose values are never kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_header: Vec<String>,
}

/// One hook of a session request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    /// A hook kind: `syscalls`, `tracepoint`, or a probe name.
    pub kind: String,
    /// Its arguments by name (`GET /v1/hooks` lists each kind's).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// The syscalls probe's settings of one session (hook kind `syscalls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyscallsHook {
    /// Only these system calls, by the node architecture's names; empty: every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscall: Vec<String>,
    /// Only calls that returned -errno (decided in the kernel).
    #[serde(default, skip_serializing_if = "is_false")]
    pub errors_only: bool,
    /// Per container and syscall totals instead of an event per call.
    #[serde(default, skip_serializing_if = "is_false")]
    pub summary: bool,
    /// With summary: how often the totals are reported (`5s`; default the node's 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// The tracepoint probe's settings of one session (hook kind `tracepoint`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TracepointHook {
    /// Tracepoints as `SUBSYSTEM:EVENT`.
    pub name: Vec<String>,
    /// `FIELD OP VALUE` joined by `&&`, evaluated on each tracepoint that has the fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A tracepoint name as a session may give it: `SUBSYSTEM:EVENT`, with or
/// without `tp:`. Whether it exists is the node's to say (its tracefs).
fn check_tracepoint_name(n: &str) -> Result<String, String> {
    let bare = n.trim();
    let bare = bare
        .strip_prefix("tp:")
        .or_else(|| bare.strip_prefix("tracepoint:"))
        .unwrap_or(bare);
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    match bare.split_once(':') {
        Some((sys, ev)) if ok(sys) && ok(ev) => Ok(bare.to_string()),
        _ => Err(format!(
            "tracepoint '{n}' is not SUBSYSTEM:EVENT (e.g. sched:sched_process_fork; \
             `podscope probes --tracepoints` lists a node's)"
        )),
    }
}

impl HookRequest {
    /// Checks the kind and its arguments against the catalogue (`GET
    /// /v1/hooks`) and adds what it asks for to `spec`.
    fn apply(&self, spec: &mut SessionSpec) -> Result<(), String> {
        let kinds = podscope_model::hooks::hook_kinds();
        let Some(kind) = kinds.iter().find(|k| k.kind == self.kind) else {
            let names: Vec<&str> = kinds.iter().map(|k| k.kind).collect();
            return Err(format!(
                "hook kind '{}' is not one of {} (GET /v1/hooks describes them)",
                self.kind,
                names.join(", ")
            ));
        };
        for name in self.args.keys() {
            if !kind.args.iter().any(|a| a.name == name) {
                let known: Vec<&str> = kind.args.iter().map(|a| a.name).collect();
                return Err(if known.is_empty() {
                    format!("hook '{}' takes no arguments (got '{name}')", kind.kind)
                } else {
                    format!(
                        "hook '{}' has no argument '{name}'; its arguments are {}",
                        kind.kind,
                        known.join(", ")
                    )
                });
            }
        }
        for a in kind.args.iter().filter(|a| a.required) {
            if !self.args.contains_key(a.name) {
                return Err(format!(
                    "hook '{}' needs the argument '{}' ({}), e.g. {}",
                    kind.kind, a.name, a.description, a.example
                ));
            }
        }
        let args = serde_json::Value::Object(self.args.clone());
        let typed = |e: serde_json::Error| {
            format!(
                "hook '{}': arguments {args}: {e} (GET /v1/hooks has the types)",
                kind.kind
            )
        };
        match kind.kind {
            podscope_model::hooks::FTRACE => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Names {
                    name: Vec<String>,
                    #[serde(default)]
                    filter: Option<String>,
                    #[serde(default)]
                    buffer_size: Option<String>,
                }
                let h: Names = serde_json::from_value(args.clone()).map_err(typed)?;
                if h.name.is_empty() {
                    return Err("hook 'ftrace': name lists no tracepoint".into());
                }
                for n in &h.name {
                    add_ftrace(spec, n.trim_start_matches("ftrace:"))?;
                }
                if let Some(f) = h.filter {
                    set_ftrace_filter(spec, f)?;
                }
                if let Some(b) = h.buffer_size {
                    set_ftrace_buffer(spec, &b)?;
                }
            }
            "syscalls" => {
                let h: SyscallsHook = serde_json::from_value(args.clone()).map_err(typed)?;
                if let Some(i) = &h.interval {
                    if !h.summary {
                        return Err("hook 'syscalls': interval is the summary's period; add \"summary\": true".into());
                    }
                    parse_duration(i).map_err(|e| format!("hook 'syscalls': interval: {e}"))?;
                }
                if h.syscall.iter().any(|n| n.trim().is_empty()) {
                    return Err("hook 'syscalls': an empty syscall name".into());
                }
                if spec.syscalls.is_some() {
                    return Err("the syscalls hook is given twice".into());
                }
                spec.syscalls = Some(h);
                if !spec.probes.iter().any(|p| p == "syscalls") {
                    spec.probes.push("syscalls".into());
                }
            }
            "tracepoint" => {
                let mut h: TracepointHook = serde_json::from_value(args.clone()).map_err(typed)?;
                if h.name.is_empty() {
                    return Err("hook 'tracepoint': name lists no tracepoint".into());
                }
                h.name = h
                    .name
                    .iter()
                    .map(|n| check_tracepoint_name(n))
                    .collect::<Result<_, _>>()?;
                if let Some(f) = &h.filter {
                    podscope_bpf::tracepoint::filter::parse(f)?;
                }
                merge_tracepoints(spec, h)?;
            }
            probe => {
                let k = ProbeKind::parse_list(probe).map_err(|e| e.to_string())?;
                for k in k {
                    if !spec.probes.iter().any(|p| p == k.name()) {
                        spec.probes.push(k.name().to_string());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Adds a tracepoint traced through ftrace (no BPF) to a spec's probes, as
/// `ftrace:SUBSYSTEM:EVENT` (from a `probes` entry or the ftrace hook).
fn add_ftrace(spec: &mut SessionSpec, name: &str) -> Result<(), String> {
    let n = format!("ftrace:{}", check_tracepoint_name(name)?);
    if !spec.probes.contains(&n) {
        spec.probes.push(n);
    }
    Ok(())
}

/// The filter of a session's `ftrace:` entries: a tracepoint hook without
/// names (ftrace runs alone, so no `tp:` name can be beside it).
fn set_ftrace_filter(spec: &mut SessionSpec, filter: String) -> Result<(), String> {
    podscope_bpf::tracepoint::filter::parse(&filter)?;
    merge_tracepoints(
        spec,
        TracepointHook {
            name: Vec::new(),
            filter: Some(filter),
        },
    )
}

/// The ftrace instances' buffer size of a session (`ftrace_buffer_size`,
/// or the ftrace hook's `buffer_size`).
fn set_ftrace_buffer(spec: &mut SessionSpec, size: &str) -> Result<(), String> {
    let bytes = podscope_pipeline::parse_ring_size(size)
        .map_err(|e| format!("ftrace buffer_size '{size}': {e}"))?;
    if bytes == 0 {
        return Err(format!(
            "ftrace buffer_size '{size}': give bytes (e.g. 64M); leave it out for ftrace's default"
        ));
    }
    match spec.ftrace_buffer_bytes {
        Some(b) if b != bytes => Err("two ftrace buffer sizes given; give one".into()),
        _ => {
            spec.ftrace_buffer_bytes = Some(bytes);
            Ok(())
        }
    }
}

/// Adds tracepoints to a spec (from `probes` entries `tp:...` or a hook).
fn merge_tracepoints(spec: &mut SessionSpec, h: TracepointHook) -> Result<(), String> {
    match &mut spec.tracepoint {
        None => spec.tracepoint = Some(h),
        Some(t) => {
            if h.filter.is_some() && t.filter.is_some() && h.filter != t.filter {
                return Err("two tracepoint filters given; join them with && in one".into());
            }
            if h.filter.is_some() {
                t.filter = h.filter;
            }
            for n in h.name {
                if !t.name.contains(&n) {
                    t.name.push(n);
                }
            }
        }
    }
    Ok(())
}

/// Checks an exec request's target: one pod by exact name, and a command.
pub fn check_exec_target(namespace: &str, pod: &str, command: &[String]) -> Result<(), String> {
    if namespace.is_empty() || pod.is_empty() {
        return Err("exec needs a namespace and a pod name".into());
    }
    if podscope_runtime::names::is_glob(pod) || podscope_runtime::names::is_glob(namespace) {
        return Err(format!(
            "exec runs in one pod: give its exact name, not a pattern ({namespace}/{pod})"
        ));
    }
    if command.is_empty() || command[0].is_empty() {
        return Err("exec needs a command, e.g. [\"ip\", \"addr\"]".into());
    }
    Ok(())
}

/// A validated pod/container selection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Selection {
    /// Pod name or glob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Namespace; None with `all_namespaces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every namespace.
    pub all_namespaces: bool,
    /// Label selector, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Container name or glob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A validated session request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionSpec {
    /// Which pods and containers.
    #[serde(flatten)]
    pub selection: Selection,
    /// Probe names.
    pub probes: Vec<String>,
    /// Duration, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Parsed duration in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The syscalls probe's settings (hook kind `syscalls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<SyscallsHook>,
    /// Tracepoints and their filter (hook kind `tracepoint`, or `tp:` probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracepoint: Option<TracepointHook>,
    /// The agents export the session over OTLP too (`CreateSession::otlp`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub otlp: bool,
    /// The ftrace instances' buffer per CPU in bytes (`ftrace_buffer_size`);
    /// none: ftrace's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftrace_buffer_bytes: Option<u32>,
    /// Headers and bodies kept (`CreateSession::capture`), checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureSettings>,
}

/// Checks a pod or container name pattern: Kubernetes names (lowercase
/// letters, digits, `-`, `.`) plus the glob characters `*` and `?`.
pub fn check_name_glob(what: &str, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(format!(
            "{what} must not be empty (leave it out to match any)"
        ));
    }
    if pattern.len() > 253 {
        return Err(format!("{what} '{pattern}' is longer than 253 characters"));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?')))
    {
        return Err(format!(
            "{what} '{pattern}' has the character '{c}', which no Kubernetes name has; use letters, digits, '-', '.', and the globs '*' and '?'"
        ));
    }
    Ok(())
}

fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty()
        || ns.len() > 63
        || !ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "namespace '{ns}' is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63; no globs: use all_namespaces)"
        ));
    }
    Ok(())
}

/// Parses a session duration: more than zero, at most 24 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("duration '{s}' is not a duration ({e}); use e.g. 30s, 5m, 1h"))?;
    if d.is_zero() {
        return Err(format!("duration '{s}' must be more than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!("duration '{s}' is longer than the maximum of 24h"));
    }
    Ok(d)
}

/// Parses and checks a probe list (names or `all`), naming the closest valid probe.
pub fn parse_probes(list: &[String]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!(
            "probes must name at least one probe: {} or all",
            probe_names().join(", ")
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for p in list {
        let kinds = ProbeKind::parse_list(p).map_err(|e| {
            let hint = e
                .suggestion()
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            format!(
                "unknown probe '{p}'{hint}; probes are {} or all",
                probe_names().join(", ")
            )
        })?;
        for k in kinds {
            if !out.iter().any(|o| o == k.name()) {
                out.push(k.name().to_string());
            }
        }
    }
    Ok(out)
}

fn probe_names() -> Vec<&'static str> {
    ProbeKind::ALL.iter().map(|p| p.name()).collect()
}

impl Selection {
    /// Validates the selection fields of a request or of CLI flags.
    pub fn new(
        pod: Option<String>,
        namespace: Option<String>,
        all_namespaces: bool,
        selector: Option<String>,
        container: Option<String>,
    ) -> Result<Selection, String> {
        if let Some(p) = &pod {
            check_name_glob("pod", p)?;
        }
        if let Some(c) = &container {
            check_name_glob("container", c)?;
        }
        if all_namespaces && namespace.is_some() {
            return Err("give either namespace or all_namespaces, not both".into());
        }
        if let Some(ns) = &namespace {
            check_namespace(ns)?;
        }
        if let Some(s) = &selector {
            Selector::parse(s).map_err(|e| format!("bad label selector '{s}': {e}"))?;
        }
        Ok(Selection {
            pod,
            namespace: if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.into()))
            },
            all_namespaces,
            selector,
            container,
        })
    }

    /// Whether a pod is chosen (its containers may still be narrowed by name).
    pub fn matches_pod(&self, pod: &Pod) -> bool {
        // Pods found through /proc have no namespace or labels: match on what is known.
        let known = pod.source != Source::Proc;
        if let Some(ns) = &self.namespace {
            if known && &pod.namespace != ns {
                return false;
            }
        }
        if let Some(p) = &self.pod {
            if !glob_match(p, &pod.name) && !glob_match(p, &pod.uid) {
                return false;
            }
        }
        if let Some(sel) = self
            .selector
            .as_deref()
            .and_then(|s| Selector::parse(s).ok())
        {
            if !sel.matches(&pod.labels) {
                return false;
            }
        }
        true
    }

    /// The chosen pods with their containers narrowed to the chosen ones;
    /// pods left without a container are dropped when a container was named.
    pub fn select(&self, pods: &[Pod]) -> Vec<Pod> {
        pods.iter()
            .filter(|p| self.matches_pod(p))
            .filter_map(|p| {
                let mut p = p.clone();
                if let Some(c) = &self.container {
                    p.containers.retain(|x| glob_match(c, &x.name));
                    if p.containers.is_empty() {
                        return None;
                    }
                }
                Some(p)
            })
            .collect()
    }
}

impl Selection {
    /// What was asked for, in words (as `podscope trace` says it on a node).
    pub fn describe(&self) -> String {
        podscope_runtime::names::describe_selection(
            self.pod.as_deref(),
            self.namespace.as_deref(),
            self.selector.as_deref(),
            self.container.as_deref(),
        )
    }

    /// None when some pod of `pods` (every node's, as the hub knows them) is
    /// chosen; else the error, worded as on a node: what was asked, the
    /// closest names, the containers there are, the pods there are.
    pub fn no_match(&self, pods: &[NodePod]) -> Option<String> {
        let all: Vec<Pod> = pods.iter().map(|p| p.pod.clone()).collect();
        if !self.select(&all).is_empty() {
            return None;
        }
        let mut msg = format!("no {} on any node of the hub", self.describe());
        if pods.is_empty() {
            msg.push_str("; no node reports any pod (is an agent connected? GET /v1/nodes)");
            return Some(msg);
        }
        if let Some(p) = &self.pod {
            let close = closest_names(p, pods.iter().map(|q| q.pod.name.as_str()), 3);
            if !close.is_empty() {
                let full: Vec<String> = pods
                    .iter()
                    .filter(|q| close.contains(&q.pod.name))
                    .map(|q| q.pod.qualified_name())
                    .collect();
                msg.push_str(&format!("; did you mean {}?", full.join(", ")));
            }
        }
        if let Some(c) = &self.container {
            let names: Vec<String> = pods
                .iter()
                .filter(|p| self.matches_pod(&p.pod))
                .flat_map(|p| p.pod.containers.iter().map(|c| c.name.clone()))
                .collect();
            if !names.is_empty() {
                msg.push_str(&format!(
                    "; containers in the matching pods: {} (not {c})",
                    names.join(", ")
                ));
            }
        }
        let listed: Vec<String> = pods
            .iter()
            .take(20)
            .map(|p| format!("{} (node {})", p.pod.qualified_name(), p.node))
            .collect();
        msg.push_str(&format!(
            "\npods on the hub's nodes ({}): {}{}",
            pods.len(),
            listed.join(", "),
            if pods.len() > 20 { ", ..." } else { "" }
        ));
        if self.namespace.is_some() && !self.all_namespaces {
            msg.push_str("\n(use -A to look in every namespace, or -n NAMESPACE)");
        }
        Some(msg)
    }
}

impl CreateSession {
    /// Checks every field; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<SessionSpec, String> {
        let selection = Selection::new(
            self.pod.clone(),
            self.namespace.clone(),
            self.all_namespaces,
            self.selector.clone(),
            self.container.clone(),
        )?;
        let entries: Vec<String> = self
            .probes
            .iter()
            .flat_map(|p| p.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let (ftrace, entries): (Vec<&String>, Vec<&String>) =
            entries.iter().partition(|p| p.starts_with("ftrace:"));
        let (tps, names): (Vec<&String>, Vec<&String>) = entries
            .into_iter()
            .partition(|p| p.starts_with("tp:") || p.starts_with("tracepoint:"));
        // A typed tracepoint hook without names beside ftrace: entries is
        // their filter (what the CLI sends for ftrace:... --filter).
        let (ftrace_filter, tracepoint) = match &self.tracepoint {
            Some(t) if t.name.is_empty() && !ftrace.is_empty() => (t.filter.clone(), None),
            t => (None, t.as_ref()),
        };
        let typed: Vec<HookRequest> = self
            .syscalls
            .iter()
            .map(|h| ("syscalls", serde_json::to_value(h)))
            .chain(tracepoint.map(|h| ("tracepoint", serde_json::to_value(h))))
            .map(|(kind, v)| HookRequest {
                kind: kind.into(),
                args: match v {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => Default::default(),
                },
            })
            .collect();
        let hooks: Vec<&HookRequest> = self.hook.iter().chain(&self.hooks).chain(&typed).collect();
        let names: Vec<String> = names.into_iter().cloned().collect();
        let probes =
            if names.is_empty() && (!tps.is_empty() || !hooks.is_empty() || !ftrace.is_empty()) {
                Vec::new()
            } else {
                parse_probes(&names)?
            };
        let duration_ms = match &self.duration {
            Some(d) => Some(parse_duration(d)?.as_millis() as u64),
            None => None,
        };
        let mut spec = SessionSpec {
            selection,
            probes,
            duration: self.duration.clone(),
            duration_ms,
            syscalls: None,
            tracepoint: None,
            otlp: self.otlp,
            ftrace_buffer_bytes: None,
            capture: None,
        };
        if !tps.is_empty() {
            let name = tps
                .iter()
                .map(|n| check_tracepoint_name(n))
                .collect::<Result<_, _>>()?;
            merge_tracepoints(&mut spec, TracepointHook { name, filter: None })?;
        }
        for n in ftrace {
            add_ftrace(&mut spec, n.trim_start_matches("ftrace:"))?;
        }
        if let Some(f) = ftrace_filter {
            set_ftrace_filter(&mut spec, f)?;
        }
        for h in hooks {
            h.apply(&mut spec)?;
        }
        if let Some(b) = &self.ftrace_buffer_size {
            set_ftrace_buffer(&mut spec, b)?;
        }
        // ftrace runs alone: its own tracefs instance, no BPF probe.
        let ftraced = spec.probes.iter().any(|p| p.starts_with("ftrace:"));
        if spec.ftrace_buffer_bytes.is_some() && !ftraced {
            return Err(
                "ftrace_buffer_size sizes the ftrace: entries' tracefs instance, and the session \
                 has none (the agents size their BPF rings themselves)"
                    .into(),
            );
        }
        if ftraced
            && (spec.probes.iter().any(|p| !p.starts_with("ftrace:"))
                || spec.tracepoint.as_ref().is_some_and(|t| !t.name.is_empty())
                || spec.syscalls.is_some())
        {
            return Err(
                "ftrace:SUBSYSTEM:EVENT runs alone (a tracefs instance, no BPF): give only ftrace: \
                 entries, or use tp:SUBSYSTEM:EVENT (the BPF hook) with other probes"
                    .into(),
            );
        }
        if spec.probes.is_empty() && spec.tracepoint.is_none() {
            return Err(format!(
                "probes must name at least one probe: {} or all (or give a hook)",
                probe_names().join(", ")
            ));
        }
        if spec.syscalls.is_some() && !spec.probes.iter().any(|p| p == "syscalls") {
            spec.probes.push("syscalls".into());
        }
        if let Some(c) = &self.capture {
            podscope_proto::Capture::new(c.headers, c.body, &c.redact_header)
                .map_err(|e| format!("capture: {e}"))?;
            let requests = spec
                .probes
                .iter()
                .any(|p| matches!(p.as_str(), "http" | "grpc" | "tls"));
            if !requests {
                return Err(
                    "capture is a setting of the request probes: add http, grpc or tls to probes"
                        .into(),
                );
            }
            spec.capture = Some(c.clone());
        }
        Ok(spec)
    }
}

/// `PUT /v1/sessions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    /// `running` or `stopped`.
    pub state: String,
}

/// A pod as `GET /v1/pods` lists it: the node's pod model plus the node name.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodePod {
    /// The node (agent) that reported it.
    pub node: String,
    /// The pod.
    #[serde(flatten)]
    pub pod: Pod,
    /// With `?usage=true`: each container's CPU and memory as the node last
    /// reported them (read from the containers' cgroups every pod check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Vec<ContainerUsageView>>,
}

/// One container's CPU and memory as its node last reported them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContainerUsageView {
    /// The container's name.
    pub container: String,
    /// CPU between the node's last two reports, percent of one CPU (none
    /// until two reports arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// CPU used since the container started, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// Memory in use now (cgroup), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// A node as `GET /v1/nodes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeView {
    /// Node name.
    pub node: String,
    /// `up` while its agent is connected, else `down`.
    pub state: String,
    /// Kernel release.
    pub kernel: String,
    /// Probes its kernel supports.
    pub probes: Vec<String>,
    /// Number of pods it reports.
    pub pods: usize,
    /// When the agent last said something (RFC 3339).
    pub last_seen: String,
    /// When the agent (last) registered (RFC 3339).
    pub registered: String,
    /// Whether the agent allows exec.
    pub exec_enabled: bool,
    /// The agent's podscope version.
    pub version: String,
}

/// One node's part of a session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeSession {
    /// `starting`, `running`, `stopping`, `finished`, `failed` or `lost`.
    pub state: String,
    /// Events delivered to the hub.
    pub events: u64,
    /// Events the kernel could not hand over (from the trace's `lost` records and summary).
    pub lost: u64,
    /// Events the agent or hub could not deliver, per probe.
    pub gaps: BTreeMap<String, u64>,
    /// Why it failed or was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The trace's final summary record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryView>,
}

/// A node's trace summary: the `summary` record of docs/json-schema.md,
/// with what the session delivered from that node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SummaryView {
    /// When it was written (RFC 3339).
    pub timestamp: String,
    /// `summary`.
    pub kind: String,
    /// How long the trace ran.
    pub duration_ns: u64,
    /// Events the probes decoded (all pods of the node's trace).
    pub events: u64,
    /// Events lost on the node (ring, maps, queue).
    pub lost: u64,
    /// Per probe.
    pub probes: Vec<SummaryProbe>,
    /// Events this session delivered from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emitted: Option<u64>,
    /// The node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One probe's line of a [`SummaryView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SummaryProbe {
    /// The probe.
    pub probe: String,
    /// Events decoded.
    pub events: u64,
    /// Ring full or undecodable.
    pub lost: u64,
    /// Tracking map full.
    pub map_full: u64,
    /// Dropped between the drain thread and the consumer.
    pub queue_full: u64,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// `created`, `running`, `stopping` or `stopped`.
    pub state: String,
    /// What it traces.
    #[serde(flatten)]
    pub spec: SessionSpec,
    /// RFC 3339 times.
    pub created_at: String,
    /// Last start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Last stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Why it stopped: `requested`, `duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// How many times it was started.
    pub run: u64,
    /// Totals over the nodes.
    pub events: u64,
    /// Kernel-side losses over the nodes.
    pub lost: u64,
    /// Undelivered events over the nodes (agent queue and hub).
    pub gaps: u64,
    /// Per node.
    pub nodes: BTreeMap<String, NodeSession>,
    /// Taken over from the agents after a hub restart: its counts (events,
    /// lost, gaps) start at the takeover, and its creation time is unknown
    /// (shown as its start).
    #[serde(default)]
    pub resumed: bool,
}

/// What kind of failure an API operation had: one list that the REST
/// statuses, the gRPC codes and the clients' words all come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400, INVALID_ARGUMENT).
    BadRequest,
    /// No or the wrong token (401, UNAUTHENTICATED).
    Unauthenticated,
    /// Not allowed here (403, PERMISSION_DENIED).
    Forbidden,
    /// No such session, pod or path (404, NOT_FOUND).
    NotFound,
    /// Not in this state (409, FAILED_PRECONDITION).
    Conflict,
    /// The body is not JSON (415, INVALID_ARGUMENT).
    UnsupportedMediaType,
    /// The node's agent went away (502, UNAVAILABLE).
    NodeGone,
    /// The node's agent did not answer in time (504, DEADLINE_EXCEEDED).
    NodeTimeout,
    /// Anything else (500, INTERNAL).
    Internal,
}

impl ErrorKind {
    /// The REST status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::NodeGone => 502,
            ErrorKind::NodeTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// The kind a REST status means (what a client reads back).
    pub fn from_http_status(status: u16) -> ErrorKind {
        match status {
            400 | 413 | 405 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            415 => ErrorKind::UnsupportedMediaType,
            502 | 503 => ErrorKind::NodeGone,
            504 => ErrorKind::NodeTimeout,
            _ => ErrorKind::Internal,
        }
    }

    /// The gRPC code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadRequest | ErrorKind::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::Forbidden => tonic::Code::PermissionDenied,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Conflict => tonic::Code::FailedPrecondition,
            ErrorKind::NodeGone => tonic::Code::Unavailable,
            ErrorKind::NodeTimeout => tonic::Code::DeadlineExceeded,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }

    /// The kind a gRPC code means.
    pub fn from_grpc_code(code: tonic::Code) -> ErrorKind {
        match code {
            tonic::Code::InvalidArgument => ErrorKind::BadRequest,
            tonic::Code::Unauthenticated => ErrorKind::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorKind::Forbidden,
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::FailedPrecondition => ErrorKind::Conflict,
            tonic::Code::Unavailable => ErrorKind::NodeGone,
            tonic::Code::DeadlineExceeded => ErrorKind::NodeTimeout,
            _ => ErrorKind::Internal,
        }
    }
}

/// A failed API operation: its kind and the words for the user. The hub's
/// operations return it; REST and gRPC each turn it into their own answer,
/// with the same message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What was wrong, and what would be right.
    pub message: String,
}

impl ApiError {
    /// An error of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }
}

/// `GET /v1/pods` query: which pods (kubectl semantics) and on which node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodQuery {
    /// Pod name or glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Namespace (none at all, and no other filter: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[serde(default)]
    pub all_namespaces: bool,
    /// Label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Container name or glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Only this node's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Add each pod's containers' CPU and memory (`usage`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage: bool,
}

/// `GET` and `DELETE /v1/sessions` query: globs over the sessions' own
/// pod/container/namespace patterns (container-tracer's model), and a state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Glob over the session's pod pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Glob over the session's container pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Glob over the session's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only sessions in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `POST /v1/exec`: run a host tool in one pod's namespaces on its node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's exact name.
    pub pod: String,
    /// Container (default: the pod's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The tool and its arguments (never through a shell).
    pub command: Vec<String>,
    /// Namespaces to join (default `["net"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Default `30s`, at most `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// What `POST /v1/exec` answers: the tool's exit code and output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecView {
    /// The node it ran on.
    pub node: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The tool's exit code (124 timeout, 125-127 could not run, 128+N killed by signal N).
    pub exit_code: i32,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
    /// Output beyond 1 MiB per stream was cut off.
    pub truncated: bool,
}

/// A probe as `GET /v1/probes` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProbeView {
    /// Its name, as `probes` takes it.
    pub probe: String,
    /// What it traces.
    pub description: String,
    /// The nodes whose kernel supports it.
    pub nodes: Vec<String>,
}

/// A hook kind a session can trace with, as `GET /v1/hooks` lists it
/// (from the one catalogue `podscope hooks` prints, podscope_model::hooks).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookView {
    /// The kind (`syscalls`, `tracepoint`, `exec`, ...).
    pub kind: String,
    /// What it reports.
    pub description: String,
    /// How to ask for it with `podscope trace`.
    pub usage: String,
    /// Its arguments.
    pub args: Vec<HookArgView>,
}

/// One argument of a [`HookView`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HookArgView {
    /// Its key in a session's hook arguments.
    pub name: String,
    /// `string`, `string_list`, `bool`, `duration` or `integer`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Must be given.
    pub required: bool,
    /// The `podscope trace` flag that sets it.
    pub flag: String,
    /// What it does.
    pub description: String,
    /// An example value, as JSON.
    pub example: String,
}

impl From<&podscope_model::hooks::HookKind> for HookView {
    fn from(h: &podscope_model::hooks::HookKind) -> Self {
        HookView {
            kind: h.kind.to_string(),
            description: h.description.to_string(),
            usage: h.usage.to_string(),
            args: h
                .args
                .iter()
                .map(|a| HookArgView {
                    name: a.name.to_string(),
                    ty: match serde_json::to_value(a.ty) {
                        Ok(serde_json::Value::String(s)) => s,
                        _ => String::new(),
                    },
                    required: a.required,
                    flag: a.flag.to_string(),
                    description: a.description.to_string(),
                    example: a.example.to_string(),
                })
                .collect(),
        }
    }
}

/// What the `DELETE`s answer: the ids of the sessions deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deleted {
    /// Session ids.
    pub deleted: Vec<String>,
}

/// An error body: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<SessionSpec, String> {
        serde_json::from_str::<CreateSession>(json)
            .map_err(|e| e.to_string())?
            .validate()
    }

    fn node_pod(node: &str, ns: &str, name: &str, containers: &[&str]) -> NodePod {
        let v = json_pod(ns, name, containers);
        NodePod {
            node: node.into(),
            pod: serde_json::from_value(v).unwrap(),
            usage: None,
        }
    }

    fn json_pod(ns: &str, name: &str, containers: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "uid": format!("uid-{name}"), "name": name, "namespace": ns, "labels": {},
            "runtime": "containerd", "state": "ready", "source": "cri",
            "containers": containers.iter().map(|c| serde_json::json!({
                "id": format!("id-{c}"), "name": c, "image": "img", "state": "running"
            })).collect::<Vec<_>>(),
        })
    }

    fn sel(json: &str) -> Selection {
        req(json).unwrap().selection
    }

    #[test]
    fn no_match_says_what_exists_as_on_a_node() {
        let pods = vec![
            node_pod("node-1", "default", "api-0", &["app"]),
            node_pod("node-2", "shop", "web-0", &["nginx", "exporter"]),
        ];
        assert_eq!(
            sel(r#"{"probes":["exec"],"pod":"api-0"}"#).no_match(&pods),
            None
        );
        // A misspelt pod.
        let m = sel(r#"{"probes":["exec"],"pod":"api-O"}"#)
            .no_match(&pods)
            .unwrap();
        assert!(
            m.contains("no pod api-O in namespace default on any node of the hub"),
            "{m}"
        );
        assert!(m.contains("did you mean default/api-0?"), "{m}");
        assert!(m.contains("shop/web-0 (node node-2)"), "{m}");
        // A forgotten -n.
        let m = sel(r#"{"probes":["exec"],"pod":"web-0"}"#)
            .no_match(&pods)
            .unwrap();
        assert!(m.contains("did you mean shop/web-0?"), "{m}");
        assert!(m.contains("use -A to look in every namespace"), "{m}");
        // A container that no chosen pod has.
        let m = sel(r#"{"probes":["exec"],"namespace":"shop","container":"nosuch"}"#)
            .no_match(&pods)
            .unwrap();
        assert!(
            m.contains("containers in the matching pods: nginx, exporter (not nosuch)"),
            "{m}"
        );
        assert_eq!(
            sel(r#"{"probes":["exec"],"namespace":"shop","container":"exp*"}"#).no_match(&pods),
            None
        );
        let m = sel(r#"{"probes":["exec"],"all_namespaces":true}"#)
            .no_match(&[])
            .unwrap();
        assert!(m.contains("no node reports any pod"), "{m}");
    }

    #[test]
    fn validation() {
        let ok = req(r#"{"namespace":"shop","pod":"web-*","container":"*","probes":["tcp","exec"],"duration":"60s"}"#).unwrap();
        assert_eq!(ok.probes, ["tcp", "exec"]);
        assert_eq!(ok.duration_ms, Some(60_000));
        assert_eq!(ok.selection.namespace.as_deref(), Some("shop"));
        let d = req(r#"{"probes":["exec"]}"#).unwrap();
        assert_eq!(d.selection.namespace.as_deref(), Some("default"));
        assert!(req(r#"{"probes":["tpc"]}"#)
            .unwrap_err()
            .contains("did you mean 'tcp'"));
        assert!(req(r#"{"probes":[]}"#)
            .unwrap_err()
            .contains("at least one"));
        assert!(req(r#"{"probes":["exec"],"pod":"web/0"}"#)
            .unwrap_err()
            .contains("'/'"));
        assert!(req(r#"{"probes":["exec"],"selector":"app in (a"}"#)
            .unwrap_err()
            .contains("label selector"));
        assert!(req(r#"{"probes":["exec"],"duration":"0s"}"#)
            .unwrap_err()
            .contains("more than zero"));
        assert!(req(r#"{"probes":["exec"],"duration":"25h"}"#)
            .unwrap_err()
            .contains("24h"));
        assert!(req(r#"{"probes":["exec"],"duration":"soon"}"#)
            .unwrap_err()
            .contains("not a duration"));
        assert!(req(r#"{"probes":["exec"],"namespace":"Shop"}"#)
            .unwrap_err()
            .contains("namespace"));
        assert!(req(r#"{"probes":["exec"],"namespace":"a","all_namespaces":true}"#).is_err());
        assert!(req(r#"{"probes":["exec"],"colour":"red"}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert_eq!(
            req(r#"{"probes":["all"],"all_namespaces":true}"#)
                .unwrap()
                .probes
                .len(),
            // syscalls and net are asked for by name, not by `all`.
            ProbeKind::ALL.len() - 2
        );
    }

    /// `capture` needs a request probe, a body size of 1..16K and header names.
    #[test]
    fn capture_settings_are_checked() {
        let ok = req(r#"{"probes":["http"],"capture":{"headers":true,"body":256,"redact_header":["x-tenant"]}}"#)
            .unwrap();
        assert_eq!(ok.capture.unwrap().body, Some(256));
        for (body, says) in [
            (
                r#"{"probes":["exec"],"capture":{"headers":true}}"#,
                "add http, grpc or tls",
            ),
            (
                r#"{"probes":["http"],"capture":{"body":0}}"#,
                "capture: body size 0 must be between 1 and 16K",
            ),
            (
                r#"{"probes":["http"],"capture":{"body":20000}}"#,
                "between 1 and 16K",
            ),
            (
                r#"{"probes":["http"],"capture":{"redact_header":["a b"]}}"#,
                "capture: 'a b' is not a header name",
            ),
            (
                r#"{"probes":["http"],"capture":{"bodies":1}}"#,
                "unknown field",
            ),
        ] {
            let e = req(body).unwrap_err();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    /// ftrace: entries and the ftrace hook give the same session, alone.
    #[test]
    fn ftrace_sessions_are_alone() {
        let by_probe = req(
            r#"{"probes":["ftrace:sched:sched_process_fork,ftrace:sched:sched_process_exit"]}"#,
        )
        .unwrap();
        assert_eq!(
            by_probe.probes,
            [
                "ftrace:sched:sched_process_fork",
                "ftrace:sched:sched_process_exit"
            ]
        );
        let by_hook = req(r#"{"hooks":[{"kind":"ftrace","args":{"name":["sched:sched_process_fork","sched:sched_process_exit"]}}]}"#).unwrap();
        assert_eq!(by_hook.probes, by_probe.probes);
        // Their filter: in the hook, or as the CLI sends it (a tracepoint
        // hook without names); either way a tracepoint hook without names.
        for body in [
            r#"{"hooks":[{"kind":"ftrace","args":{"name":["sched:sched_process_fork"],"filter":"child_pid > 1 || parent_pid == 1"}}]}"#,
            r#"{"probes":["ftrace:sched:sched_process_fork"],"tracepoint":{"name":[],"filter":"child_pid > 1 || parent_pid == 1"}}"#,
        ] {
            let s = req(body).unwrap();
            assert_eq!(s.probes, ["ftrace:sched:sched_process_fork"], "{body}");
            let t = s.tracepoint.unwrap();
            assert!(t.name.is_empty(), "{body}");
            assert_eq!(
                t.filter.as_deref(),
                Some("child_pid > 1 || parent_pid == 1")
            );
        }
        for (bad, why) in [
            (
                r#"{"hooks":[{"kind":"ftrace","args":{"name":["sched:sched_process_fork"],"filter":"x ="}}]}"#,
                "no operator",
            ),
            (
                r#"{"probes":["ftrace:sched:sched_process_fork"],"tracepoint":{"name":["sched:sched_switch"],"filter":"x == 1"}}"#,
                "runs alone",
            ),
            (
                r#"{"probes":["ftrace:sched:sched_process_fork","exec"]}"#,
                "runs alone",
            ),
            (
                r#"{"probes":["ftrace:sched:sched_process_fork","tp:sched:sched_switch"]}"#,
                "runs alone",
            ),
            (r#"{"probes":["ftrace:sched"]}"#, "not SUBSYSTEM:EVENT"),
            (
                r#"{"hooks":[{"kind":"ftrace","args":{"name":[]}}]}"#,
                "lists no tracepoint",
            ),
        ] {
            let err = req(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
