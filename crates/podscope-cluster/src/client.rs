//! The CLI through the hub: `podscope --hub URL ps` and `podscope --hub URL
//! trace`, over the REST API, with the same flags and output formats as on a node.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::api::{
    ApiError, CreateSession, Deleted, ErrorBody, ErrorKind, ExecBody, ExecView, NodePod, PodQuery,
    SessionView,
};
use crate::http::{request_timed, Response, Timeouts};
use crate::proto::{record::Kind, ControlRecord};
use crate::records::Received;
use crate::tls::ClientTls;

/// Pod flags as given on the command line: the pipeline's own type, so
/// local and remote traces read the same flags.
pub type RemotePods = podscope_pipeline::PodFlags;

/// `trace` flags that apply through the hub.
#[derive(Debug, Clone, Default)]
pub struct RemoteTrace {
    /// Probe list as given.
    pub probes: String,
    /// Pod flags.
    pub pods: RemotePods,
    /// `-o json` (else columns; `none` prints no events).
    pub json: bool,
    /// `-o none`.
    pub quiet: bool,
    /// --duration.
    pub duration: Option<Duration>,
    /// --max-events.
    pub max_events: Option<u64>,
    /// --wait: a selection that matches no pod yet waits for one (else the
    /// hub refuses it, naming the pods there are).
    pub wait: bool,
    /// --syscall, --errors-only, --summary, --interval (the syscalls hook).
    pub syscalls: Option<crate::api::SyscallsHook>,
    /// tp:SUBSYSTEM:EVENT probes and --filter (the tracepoint hook).
    pub tracepoint: Option<crate::api::TracepointHook>,
    /// --otlp-agents: the agents export the session over OTLP too.
    pub otlp: bool,
    /// --ring-buffer-size with ftrace: entries: the nodes' instance buffer
    /// per CPU in bytes.
    pub ftrace_buffer_bytes: Option<u32>,
    /// --capture-headers, --capture-body, --redact-header.
    pub capture: Option<crate::api::CaptureSettings>,
}

/// How to reach the hub: `--hub`, `--token-file`, and kubectl's flags for a
/// `kube://` hub (see [`crate::kubeproxy`]).
#[derive(Debug, Clone, Default)]
pub struct HubTarget {
    /// --hub: http(s)://HOST:PORT, or kube://NAMESPACE/SERVICE:PORT.
    pub url: String,
    /// --token-file (else $PODSCOPE_TOKEN, else for kube:// the token Secret).
    pub token_file: Option<PathBuf>,
    /// --tls-ca: trust for an https:// hub.
    pub tls_ca: Option<PathBuf>,
    /// --kubeconfig and --context, for kube:// hubs.
    pub kube: crate::kubeproxy::KubeOptions,
    /// --hub-api: which of the hub's APIs to use.
    pub api: HubApi,
}

/// The hub API the CLI talks to: the same operations either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HubApi {
    /// REST over HTTP/1.1 (works through proxies and the API server).
    #[default]
    Rest,
    /// gRPC (service podscope.cluster.v1.HubApi) over HTTP/2.
    Grpc,
}

struct Hub {
    url: String,
    /// The hub as the user named it, for messages.
    shown: String,
    token: String,
    /// For a kube:// hub: the kubeconfig context's namespace, the default of `-n`.
    default_namespace: Option<String>,
    /// Keeps the kube:// forwarder running.
    _proxy: Option<crate::kubeproxy::KubeProxy>,
    /// Trust for an https:// hub URL.
    tls: Option<ClientTls>,
    /// With --hub-api grpc: the calls go here instead.
    grpc: Option<crate::grpc_client::GrpcHub>,
    /// `trace --duration`: every call must be over by then.
    end_by: Option<Instant>,
}

/// How long after `--duration` a trace through the hub waits for its
/// session to end (the nodes stop their traces and send their summaries)
/// before it gives up; every call to the hub is bounded by that deadline too.
const END_GRACE: Duration = Duration::from_secs(5);

/// The hub sends an empty line on the event stream after this much silence
/// (`?keepalive=`), so the CLI can tell a quiet session from a hub that hangs.
const KEEPALIVE_SECS: u64 = 5;

/// Silence on the event stream after which the hub counts as stuck: three
/// missed keep-alives.
const STREAM_IDLE: Duration = Duration::from_secs(3 * KEEPALIVE_SECS);

impl Hub {
    fn new(target: &HubTarget) -> Result<Hub> {
        let token_file = target.token_file.as_deref();
        if let Some(svc) = crate::kubeproxy::ServiceRef::parse(&target.url) {
            let svc = svc?;
            if target.api == HubApi::Grpc {
                bail!(
                    "--hub-api grpc cannot reach a kube:// hub: the API server's service proxy \
                     carries HTTP/1.1 only; use the REST API (the default) through it, or --hub http(s)://"
                );
            }
            if target.tls_ca.is_some() {
                bail!(
                    "--tls-ca does not apply to a kube:// hub: the API server dials the hub \
                     (kube://NAMESPACE/https:SERVICE:PORT for a TLS hub)"
                );
            }
            let own_token = token_file.is_some()
                || std::env::var(crate::auth::TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty());
            let proxy = crate::kubeproxy::start(&svc, &target.kube, !own_token)?;
            let token = match &proxy.token {
                Some(t) => t.clone(),
                None => crate::auth::load_token(token_file)?,
            };
            return Ok(Hub {
                url: proxy.url.clone(),
                shown: format!("{} (through the Kubernetes API server)", target.url),
                token,
                default_namespace: Some(proxy.default_namespace.clone()),
                _proxy: Some(proxy),
                tls: None,
                grpc: None,
                end_by: None,
            });
        }
        let url = target.url.trim_end_matches('/').to_string();
        let token = crate::auth::load_token(token_file)?;
        let tls = ClientTls::for_url(&target.url, target.tls_ca.as_deref())?;
        let grpc = match target.api {
            HubApi::Rest => None,
            HubApi::Grpc => Some(crate::grpc_client::GrpcHub::new(
                &url,
                &token,
                tls.as_ref(),
            )?),
        };
        Ok(Hub {
            shown: url.clone(),
            url,
            token,
            default_namespace: None,
            _proxy: None,
            tls,
            grpc,
            end_by: None,
        })
    }

    /// `t`, cut to what is left before `end_by`.
    fn limits(&self, t: Timeouts) -> Timeouts {
        match self.end_by {
            Some(end) => t.within(end.saturating_duration_since(Instant::now())),
            None => t,
        }
    }

    /// `-n` as kubectl reads it: the flag, else (for a kube:// hub) the
    /// context's namespace, else the hub's default ("default").
    fn namespace(&self, p: &RemotePods) -> Option<String> {
        match (&p.namespace, p.all_namespaces) {
            (Some(ns), _) => Some(ns.clone()),
            (None, false) => self.default_namespace.clone(),
            (None, true) => None,
        }
    }

    /// One REST call within these limits: its typed answer, the hub's
    /// error, or why no hub answered.
    fn rest<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        limits: Timeouts,
    ) -> Result<T, CallError> {
        let r = self.rest_raw(method, path, body, limits)?;
        let (status, text) = (r.status, r.text().unwrap_or_default());
        serde_json::from_str(&text).map_err(|_| {
            CallError::Other(anyhow!(not_a_hub(&self.shown, status, method, path, &text)))
        })
    }

    /// A REST call whose 2xx answer is read by the caller (the event
    /// stream); any other answer is the hub's error, or no hub's.
    fn rest_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        limits: Timeouts,
    ) -> Result<Response, CallError> {
        let r = request_timed(
            self.tls.as_ref(),
            &self.url,
            method,
            path,
            Some(&self.token),
            body,
            &[],
            limits,
        )
        .with_context(|| format!("reaching the hub at {}", self.shown))
        .map_err(CallError::Other)?;
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let status = r.status;
        let text = r.text().unwrap_or_default();
        // Every error of a hub is {"error": ...}.
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => Err(CallError::Api {
                status,
                what: format!("{method} {}", path.split('?').next().unwrap_or(path)),
                error: ApiError::new(ErrorKind::from_http_status(status), e.error),
            }),
            Err(_) => Err(CallError::Other(anyhow!(not_a_hub(
                &self.shown,
                status,
                method,
                path,
                &text
            )))),
        }
    }

    /// A gRPC call's failure, named as the REST call of the same operation.
    fn grpc_err(&self, what: &str, e: CallError) -> CallError {
        match e {
            CallError::Api { error, .. } => CallError::Api {
                status: error.kind.http_status(),
                what: what.to_string(),
                error,
            },
            CallError::Other(e) => CallError::Other(
                e.context(format!("reaching the hub's gRPC API at {}", self.shown)),
            ),
        }
    }

    /// `GET /v1/pods`.
    fn list_pods(&self, q: PodQuery) -> Result<Vec<NodePod>, CallError> {
        let limits = self.limits(Timeouts::default());
        if let Some(g) = &self.grpc {
            return g
                .list_pods(q, limits.response)
                .map_err(|e| self.grpc_err("GET /v1/pods", e));
        }
        let mut params = Vec::new();
        for (k, v) in [
            ("pod", &q.pod),
            ("namespace", &q.namespace),
            ("selector", &q.selector),
            ("container", &q.container),
            ("node", &q.node),
        ] {
            if let Some(v) = v {
                params.push(format!("{k}={}", enc(v)));
            }
        }
        if q.all_namespaces {
            params.push("all_namespaces=true".into());
        }
        if q.usage {
            params.push("usage=true".into());
        }
        let path = if params.is_empty() {
            "/v1/pods".to_string()
        } else {
            format!("/v1/pods?{}", params.join("&"))
        };
        self.rest("GET", &path, None, limits)
    }

    /// `POST /v1/sessions`.
    fn create_session(&self, req: &CreateSession) -> Result<SessionView, CallError> {
        let limits = self.limits(Timeouts::default());
        if let Some(g) = &self.grpc {
            return g
                .create_session(req.clone(), limits.response)
                .map_err(|e| self.grpc_err("POST /v1/sessions", e));
        }
        let body = serde_json::to_string(req).map_err(|e| CallError::Other(e.into()))?;
        self.rest("POST", "/v1/sessions", Some(&body), limits)
    }

    /// `PUT /v1/sessions/{id}`: `running` or `stopped`.
    fn set_state(&self, id: &str, state: &str, limits: Timeouts) -> Result<SessionView, CallError> {
        if let Some(g) = &self.grpc {
            return g
                .update_session(id, state, limits.response)
                .map_err(|e| self.grpc_err(&format!("PUT /v1/sessions/{id}"), e));
        }
        let body = serde_json::json!({ "state": state }).to_string();
        self.rest("PUT", &format!("/v1/sessions/{id}"), Some(&body), limits)
    }

    /// `DELETE /v1/sessions/{id}`.
    fn delete_session(&self, id: &str, limits: Timeouts) -> Result<Deleted, CallError> {
        if let Some(g) = &self.grpc {
            return g
                .delete_session(id, limits.response)
                .map_err(|e| self.grpc_err(&format!("DELETE /v1/sessions/{id}"), e));
        }
        self.rest("DELETE", &format!("/v1/sessions/{id}"), None, limits)
    }

    /// `POST /v1/exec`: answers when the tool ends.
    fn exec(&self, body: &ExecBody, limits: Timeouts) -> Result<ExecView, CallError> {
        if let Some(g) = &self.grpc {
            return g
                .exec(body.clone(), limits.response)
                .map_err(|e| self.grpc_err("POST /v1/exec", e));
        }
        let b = serde_json::to_string(body).map_err(|e| CallError::Other(e.into()))?;
        self.rest("POST", "/v1/exec", Some(&b), limits)
    }

    /// A session's records: the hub keeps the stream alive while it is
    /// quiet (`?keepalive=` over REST, HTTP/2 pings over gRPC), so a silence
    /// of [`STREAM_IDLE`] means the hub is stuck.
    fn stream(&self, id: &str) -> Result<Stream, CallError> {
        let limits = self.limits(Timeouts {
            idle: Some(STREAM_IDLE),
            ..Timeouts::default()
        });
        if let Some(g) = &self.grpc {
            // Past --duration's end, silence ends the stream too.
            let idle = self.end_by.map(|e| {
                e.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100))
            });
            return g
                .stream_events(id, limits.response, idle)
                .map(Stream::Grpc)
                .map_err(|e| self.grpc_err(&format!("GET /v1/sessions/{id}/events"), e));
        }
        self.rest_raw(
            "GET",
            &format!("/v1/sessions/{id}/events?keepalive={KEEPALIVE_SECS}"),
            None,
            limits,
        )
        .map(|r| Stream::Rest(Box::new(r.lines())))
    }
}

/// A session's records as they arrive, typed, from either API.
enum Stream {
    /// REST: NDJSON lines (docs/json-schema.md), read into records.
    Rest(Box<dyn Iterator<Item = std::io::Result<String>>>),
    /// gRPC: the records as the hub forwarded them.
    Grpc(crate::grpc_client::RecordStream),
}

impl Iterator for Stream {
    /// A record, and over REST its line as the hub wrote it (`-o json`
    /// prints it as it came).
    type Item = std::io::Result<(Received, Option<String>)>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Stream::Grpc(g) => g.next_record().map(|r| r.map(|r| (r, None))),
            Stream::Rest(lines) => loop {
                match lines.next()? {
                    Err(e) => return Some(Err(e)),
                    // Keep-alives (blank lines) and anything not a record.
                    Ok(l) => match Received::from_json(&l) {
                        Some(r) => return Some(Ok((r, Some(l)))),
                        None => continue,
                    },
                }
            },
        }
    }
}

/// How a call to the hub failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The hub answered with an error.
    Api {
        /// The REST status (over gRPC: the one of the error's kind).
        status: u16,
        /// The operation, as its REST method and path.
        what: String,
        /// Its kind and words.
        error: ApiError,
    },
    /// No answer from a hub: the connection, TLS, a timeout, or not a hub.
    Other(anyhow::Error),
}

impl CallError {
    /// The hub's error kind, if the hub answered.
    fn kind(&self) -> Option<ErrorKind> {
        match self {
            CallError::Api { error, .. } => Some(error.kind),
            CallError::Other(_) => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api {
                status,
                what,
                error,
            } => write!(f, "the hub answered {status} to {what}: {}", error.message),
            CallError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The error for an answer that no podscope hub gives: the URL points at
/// something else (another service, a proxy's error page, the agent's port).
fn not_a_hub(shown: &str, status: u16, method: &str, path: &str, body: &str) -> String {
    let snippet: String = body.trim().chars().take(80).collect();
    let said = if snippet.is_empty() {
        "an empty body".to_string()
    } else {
        format!("{snippet:?}")
    };
    format!(
        "{shown} does not look like a podscope hub: it answered {status} to {method} {path} with {said}, \
         not the hub's JSON; check --hub (the hub's address and port, 7700 by default, with no path)"
    )
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The pods on every node of the hub that `p` selects (`GET /v1/pods`).
/// The pods the hub lists for the pod flags; with `usage`, each with its
/// containers' CPU and memory as their nodes last reported them.
pub fn pods(target: &HubTarget, p: &RemotePods, usage: bool) -> Result<Vec<NodePod>> {
    let hub = Hub::new(target)?;
    let q = PodQuery {
        pod: p.pod.clone(),
        namespace: hub.namespace(p),
        all_namespaces: p.all_namespaces,
        selector: p.selector.clone(),
        container: p.container.clone(),
        node: None,
        usage,
    };
    Ok(hub.list_pods(q)?)
}

/// `podscope --hub URL ps`.
pub fn ps(target: &HubTarget, p: &RemotePods, json: bool) -> Result<()> {
    let pods = pods(target, p, false)?;
    // The node's own formatter, with the NODE column.
    let rows = podscope_pipeline::podtable::pod_rows(
        pods.iter().map(|p| (Some(p.node.as_str()), &p.pod)),
        |_| None,
    );
    let out = std::io::stdout();
    let mut out = out.lock();
    if json {
        podscope_pipeline::podtable::write_json(&mut out, &rows)?;
    } else {
        podscope_pipeline::podtable::write_table(&mut out, &rows, true)?;
    }
    if rows.is_empty() {
        eprintln!("podscope: no pods on any node of the hub match");
    }
    Ok(())
}

/// How long `trace` through the hub keeps trying to get its session's
/// stream back after it broke: longer than a hub restart (the agents keep
/// their traces 30 s by default).
const RECONNECT_FOR: Duration = Duration::from_secs(45);

/// `podscope --hub URL trace`: creates a session, streams its events until it
/// ends (--duration, --max-events, Ctrl-C), deletes it. Returns the exit code.
/// `podscope --hub URL ui`: where the hub serves its web view. For a
/// kube:// hub (`kubectl podscope ui`) the forwarder through the API
/// server's service proxy runs until Ctrl-C, and the link it prints logs
/// in with the token from the hub's Secret.
pub fn ui(target: &HubTarget) -> Result<()> {
    let hub = Hub::new(target)?;
    if hub._proxy.is_none() {
        eprintln!(
            "podscope ui: {} serves the web view; log in with the hub's token",
            hub.shown
        );
        println!("{}/ui/", hub.url);
        return Ok(());
    }
    eprintln!(
        "podscope ui: the web view of {}: open\n  {}/ui/login?token={}\n\
         podscope ui: the link logs in once (a session cookie); Ctrl-C stops the forwarder",
        hub.shown, hub.url, hub.token
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(crate::hub::shutdown_signal());
    Ok(())
}

pub fn trace(target: &HubTarget, t: &RemoteTrace) -> Result<i32> {
    let out = std::io::stdout();
    let mut printer = Printer {
        out: out.lock(),
        json: t.json,
        quiet: t.quiet,
        header: false,
    };
    // Ctrl-C / SIGTERM ask the hub to stop the session; the stream then ends with the summaries.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    trace_into(target, t, stop, &mut printer)
}

/// Where the records of a trace through the hub go: printed by `trace`,
/// counted by `podscope --hub URL top`.
pub trait Records {
    /// One record as the hub sent it, typed; over REST also its JSON line as
    /// it came.
    fn record(&mut self, rec: &Received, line: Option<&str>) -> std::io::Result<()>;
    /// A record the client makes itself when the session cannot go on.
    fn interrupted(&mut self, rec: &ControlRecord) -> std::io::Result<()>;
    /// A message for the user (stderr for `trace`).
    fn say(&mut self, msg: &str) {
        eprint!("{msg}");
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `trace`'s records on stdout: JSON lines, or columns.
struct Printer<W: Write> {
    out: W,
    json: bool,
    quiet: bool,
    header: bool,
}

impl<W: Write> Records for Printer<W> {
    fn record(&mut self, rec: &Received, line: Option<&str>) -> std::io::Result<()> {
        let is_event = !matches!(rec, Received::Record(_));
        if self.json {
            match line {
                Some(l) => writeln!(self.out, "{l}")?,
                None => writeln!(self.out, "{}", rec.to_json())?,
            }
        } else if !self.quiet || !is_event {
            if !self.header {
                self.header = true;
                writeln!(self.out, "{}", podscope_pipeline::format::header_line(true))?;
            }
            writeln!(self.out, "{}", columns(rec))?;
        }
        self.out.flush()
    }
    fn interrupted(&mut self, rec: &ControlRecord) -> std::io::Result<()> {
        if self.json {
            let r = crate::records::control(rec.clone());
            writeln!(self.out, "{}", crate::records::to_value(&r))?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// [`trace`] with its records handed to `sink`; `stop` set asks the hub to
/// stop the session (the stream then ends with the summaries).
pub fn trace_into(
    target: &HubTarget,
    t: &RemoteTrace,
    stop: Arc<AtomicBool>,
    sink: &mut dyn Records,
) -> Result<i32> {
    let mut hub = Hub::new(target)?;
    hub.end_by = t.duration.map(|d| Instant::now() + d + END_GRACE);
    // The last delete is quick either way: after a failure, waiting on a
    // stuck hub would only delay the error.
    let last = Timeouts::default().within(Duration::from_secs(2));
    let req = CreateSession {
        namespace: hub.namespace(&t.pods),
        all_namespaces: t.pods.all_namespaces,
        pod: t.pods.pod.clone(),
        container: t.pods.container.clone(),
        selector: t.pods.selector.clone(),
        probes: vec![t.probes.clone()],
        duration: t
            .duration
            .map(|d| humantime::format_duration(d).to_string()),
        start: Some(false),
        wait: Some(t.wait),
        hook: None,
        hooks: Vec::new(),
        syscalls: t.syscalls.clone(),
        tracepoint: t.tracepoint.clone(),
        otlp: t.otlp,
        ftrace_buffer_size: t.ftrace_buffer_bytes.map(|b| b.to_string()),
        capture: t.capture.clone(),
    };
    let id = hub.create_session(&req)?.id;
    let stream = match hub.stream(&id) {
        Ok(s) => s,
        Err(e) => {
            let _ = hub.delete_session(&id, last);
            return Err(e.into());
        }
    };
    if let Err(e) = hub.set_state(&id, "running", hub.limits(Timeouts::default())) {
        let _ = hub.delete_session(&id, last);
        return Err(e.into());
    }
    let hub = Arc::new(hub);
    sink.say(&format!(
        "podscope: session {id} on the hub {}; Ctrl-C to stop\n",
        hub.shown
    ));
    let stopper = {
        let (stop, hub, id) = (stop.clone(), hub.clone(), id.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            // Over the API the CLI uses (gRPC with --hub-api grpc).
            let _ = hub.set_state(&id, "stopped", Timeouts::default());
        })
    };
    let mut events = 0u64;
    let mut counts: std::collections::BTreeMap<String, NodeCount> = Default::default();
    let mut stream = Some(stream);
    // Why the stream last broke, for the message if it does not come back.
    let mut broke: Option<String> = None;
    let overdue = |broke: &Option<String>| {
        format!(
            "session {id} did not end within {}s after --duration: the hub at {} {}",
            END_GRACE.as_secs(),
            hub.shown,
            broke
                .as_deref()
                .map_or("sent no end record".to_string(), |b| format!(
                    "did not answer ({b})"
                ))
        )
    };
    let code = 'outer: loop {
        if let Some(s) = stream.take() {
            for next in s {
                let (rec, line) = match next {
                    Ok(r) => r,
                    Err(e) => {
                        broke = Some(format!("{e:#}"));
                        break;
                    }
                };
                if hub.end_by.is_some_and(|e| Instant::now() > e) {
                    let why = overdue(&broke);
                    sink.interrupted(&interrupted(&id, &why))?;
                    sink.say(&format!("podscope: {why}\n"));
                    break 'outer 1;
                }
                let node = counts.entry(rec.node().to_string()).or_default();
                let ctl = match &rec {
                    Received::Record(r) => r.kind.as_ref(),
                    _ => None,
                };
                let ctl_kind = match ctl {
                    Some(Kind::Control(c)) => c.kind.as_str(),
                    _ => "",
                };
                if !matches!(rec, Received::Record(_)) {
                    if t.max_events.is_some_and(|m| events >= m) {
                        // Arrived before the stop took effect: counted, not printed.
                        node.skipped += 1;
                        continue;
                    }
                    events += 1;
                    node.printed += 1;
                    if t.max_events.is_some_and(|m| events >= m) {
                        stop.store(true, Ordering::Relaxed);
                    }
                } else if ctl_kind == "session" {
                    continue;
                }
                sink.record(&rec, line.as_deref())?;
                match ctl {
                    Some(Kind::Lost(l)) => node.lost += l.lost,
                    Some(Kind::Summary(s)) => node.summary = Some(s.clone()),
                    Some(Kind::Control(c)) => match c.kind.as_str() {
                        "gap" => node.gaps += c.gap.unwrap_or(0),
                        "node_lost" => node.node_lost = true,
                        "end" => break 'outer 0,
                        "interrupted" => break 'outer 1,
                        // The hub restarts: reconnect below.
                        "reconnect" => break,
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        // The stream broke without an end (or the hub said it restarts): is
        // the session still there, or back? A restarted hub resumes the
        // sessions its agents kept running once they re-register, so a 404
        // is retried for a while too.
        let deadline = Instant::now() + RECONNECT_FOR;
        loop {
            let late = hub.end_by.is_some_and(|e| Instant::now() > e);
            let gone = |why: String, sink: &mut dyn Records| -> Result<()> {
                sink.interrupted(&interrupted(&id, &why))?;
                sink.say(&format!("podscope: {why}\n"));
                Ok(())
            };
            if late {
                gone(overdue(&broke), sink)?;
                break 'outer 1;
            }
            match hub.stream(&id) {
                Ok(r) => {
                    stream = Some(r);
                    continue 'outer;
                }
                // Stopped meanwhile: the session is over.
                Err(e) if e.kind() == Some(ErrorKind::Conflict) => break 'outer 0,
                Err(e) if e.kind() == Some(ErrorKind::NotFound) && Instant::now() > deadline => {
                    gone(
                        format!(
                            "the hub does not know session {id} (it restarted and no agent kept the session within {RECONNECT_FOR:?})"
                        ),
                        sink,
                    )?;
                    break 'outer 1;
                }
                _ if Instant::now() > deadline => {
                    gone(
                        format!(
                            "the hub at {} stopped answering for {RECONNECT_FOR:?}{}",
                            hub.shown,
                            broke
                                .as_deref()
                                .map(|b| format!(" ({b})"))
                                .unwrap_or_default()
                        ),
                        sink,
                    )?;
                    break 'outer 1;
                }
                Err(e) => {
                    if e.kind().is_none() {
                        broke = Some(e.to_string());
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
    };
    sink.flush()?;
    drop(stopper);
    // Past the deadline the hub has had its chance: the delete must not
    // make the trace later still.
    let last = match hub.end_by {
        Some(e) if Instant::now() > e => last.within(Duration::from_millis(500)),
        _ => last,
    };
    let _ = hub.delete_session(&id, last);
    counts.remove("");
    let word = if t.quiet && !t.json {
        "received"
    } else {
        "printed"
    };
    sink.say(&summary_text(&counts, t.max_events, word));
    Ok(code)
}

/// The `interrupted` record the client makes when session `id` cannot go on.
fn interrupted(id: &str, why: &str) -> ControlRecord {
    ControlRecord {
        kind: "interrupted".into(),
        session: Some(id.to_string()),
        reason: Some(why.to_string()),
        ..Default::default()
    }
}

/// What the CLI received from one node of its session.
#[derive(Debug, Default)]
struct NodeCount {
    /// Events printed (or, with `-o none`, counted as printed).
    printed: u64,
    /// Events that arrived after --max-events was reached, before the stop took effect.
    skipped: u64,
    /// Events the kernel could not hand over (its `lost` records).
    lost: u64,
    /// Events the agent's or the hub's queue could not pass on (`gap` records).
    gaps: u64,
    /// The node's agent went away during the session.
    node_lost: bool,
    /// The node's trace's own summary.
    summary: Option<crate::proto::Summary>,
}

/// The end-of-trace summary: the events printed, and per node how they add
/// up to what its trace wrote (printed + after --max-events + not delivered
/// = the trace's `emitted`), so the counts shown always agree with the lines
/// printed.
fn summary_text(
    counts: &std::collections::BTreeMap<String, NodeCount>,
    max: Option<u64>,
    word: &str,
) -> String {
    let sum = |f: fn(&NodeCount) -> u64| counts.values().map(f).sum::<u64>();
    let (printed, skipped, lost, gaps) = (
        sum(|c| c.printed),
        sum(|c| c.skipped),
        sum(|c| c.summary.as_ref().map_or(0, |v| v.lost).max(c.lost)),
        sum(|c| c.gaps),
    );
    let mut s = format!("podscope: {printed} events {word}");
    if let Some(m) = max.filter(|_| skipped > 0) {
        s.push_str(&format!(
            " (--max-events {m}; {skipped} more arrived before the session stopped)"
        ));
    }
    s.push_str(&format!(
        ", {lost} lost in the kernel, {gaps} not delivered (queues full)\n"
    ));
    for (node, c) in counts {
        let mut parts = vec![format!("{} {word}", c.printed)];
        if c.skipped > 0 {
            parts.push(format!("{} after --max-events", c.skipped));
        }
        if c.gaps > 0 {
            parts.push(format!("{} not delivered", c.gaps));
        }
        let received = c.printed + c.skipped + c.gaps;
        let line = match c.summary.as_ref().and_then(|v| v.emitted) {
            Some(emitted) => {
                let mut l = format!("{} = {emitted} the trace wrote", parts.join(" + "));
                if emitted > received {
                    l.push_str(&format!(
                        " ({} of them never reached this client: its stream broke)",
                        emitted - received
                    ));
                }
                l
            }
            None => format!(
                "{}; no summary from its trace ({})",
                parts.join(" + "),
                if c.node_lost {
                    "the node was lost"
                } else {
                    "the session ended without it"
                }
            ),
        };
        // The trace's summary has its final kernel count; `lost` records
        // are what was reported on the way.
        let lost = c.summary.as_ref().map_or(c.lost, |v| v.lost).max(c.lost);
        s.push_str(&format!(
            "podscope: node {node}: {line}; {lost} lost in the kernel\n"
        ));
    }
    s
}

/// One record as a line of columns.
fn columns(rec: &Received) -> String {
    let r = match rec {
        // Events are formatted by the pipeline's one formatter, as locally.
        Received::Event(ev) => return podscope_pipeline::format::event_line(ev, true),
        Received::Unreadable { node, json } => {
            // A probe this client does not know (a newer agent): its JSON.
            return format!(
                "{:<12} {:<10} {:<6} {:<14} {:>7} {:<16} {json}",
                "-", node, "?", "UNREADABLE", "-", "-"
            );
        }
        Received::Record(r) => r,
    };
    let ts = |ns: u64| podscope_model::Timestamp(ns).rfc3339();
    let (stamp, node, probe, kind, what) = match &r.kind {
        Some(Kind::Lost(l)) => (
            ts(l.timestamp_ns),
            l.node.clone(),
            l.probe.clone(),
            "lost".to_string(),
            format!(
                "{} events lost in the kernel, {} in total",
                l.lost, l.lost_total
            ),
        ),
        Some(Kind::Summary(s)) => (
            s.timestamp.clone(),
            s.node.clone().unwrap_or_default(),
            String::new(),
            "summary".to_string(),
            format!("summary: {} events, {} lost", s.events, s.lost),
        ),
        Some(Kind::Control(c)) => {
            let what = match c.kind.as_str() {
                "gap" => format!(
                    "{} events not delivered ({} queue full), {} in total",
                    c.gap.unwrap_or(0),
                    c.r#where.as_deref().unwrap_or(""),
                    c.gap_total.unwrap_or(0)
                ),
                "end" => format!(
                    "session {} ended ({})",
                    c.session.as_deref().unwrap_or(""),
                    c.reason.as_deref().unwrap_or("stopped")
                ),
                _ => c
                    .message
                    .as_deref()
                    .or(c.reason.as_deref())
                    .unwrap_or("")
                    .to_string(),
            };
            (
                String::new(),
                c.node.clone().unwrap_or_default(),
                c.probe.clone().unwrap_or_default(),
                c.kind.clone(),
                what,
            )
        }
        _ => Default::default(),
    };
    let time = stamp.get(11..23).unwrap_or("-").to_string();
    format!(
        "{:<12} {:<10} {:<6} {:<14} {:>7} {:<16} {what}",
        time,
        node,
        probe,
        kind.to_uppercase(),
        "-",
        "-"
    )
}

/// `exec` flags that apply through the hub.
#[derive(Debug, Clone, Default)]
pub struct RemoteExec {
    /// Pod flags: through the hub, one pod by exact name.
    pub pods: RemotePods,
    /// --ns as given (net,pid,...).
    pub namespaces: String,
    /// -t.
    pub timeout: Option<Duration>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// `podscope --hub URL exec`: runs the tool on the pod's node through the
/// hub (both need --enable-exec), prints its output, returns its exit code.
pub fn exec(target: &HubTarget, e: &RemoteExec) -> Result<i32> {
    let Some(pod) = e.pods.pod.as_deref() else {
        bail!("through the hub, exec takes one pod by name: give --pod NAME (and -n NAMESPACE)");
    };
    if e.pods.selector.is_some() || e.pods.all_namespaces {
        bail!("through the hub, exec takes one pod by name: -l and -A select several pods; give --pod NAME -n NAMESPACE");
    }
    let hub = Hub::new(target)?;
    let namespace = hub.namespace(&e.pods).unwrap_or_else(|| "default".into());
    let body = ExecBody {
        namespace: Some(namespace),
        pod: pod.to_string(),
        container: e.pods.container.clone(),
        command: e.command.clone(),
        namespaces: Some(
            e.namespaces
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        timeout: e.timeout.map(|d| format!("{}ms", d.as_millis())),
    };
    // The hub answers when the tool ends: wait for its timeout, and then some.
    let limits = Timeouts {
        response: e.timeout.unwrap_or(Duration::from_secs(30)) + Duration::from_secs(30),
        ..Timeouts::default()
    };
    let r = hub.exec(&body, limits)?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    std::io::stdout().flush().ok();
    if r.truncated {
        eprintln!("podscope: the output was cut at 1 MiB per stream");
    }
    Ok(r.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podscope_model::*;

    fn every_probe() -> Vec<Event> {
        let identity = Identity {
            node: "node-1".into(),
            namespace: "shop".into(),
            pod: "api-0".into(),
            pod_uid: "u1".into(),
            container: "app".into(),
            container_id: "c1".into(),
            image: "img".into(),
        };
        let ev = |data| Event {
            timestamp: Timestamp(1_764_000_000_123_456_789),
            identity: identity.clone(),
            pid: 42,
            tid: 43,
            uid: 0,
            comm: "curl".into(),
            cgroup_id: 7,
            data,
        };
        vec![
            ev(EventData::Exec(ExecEvent {
                kind: "exec".into(),
                ppid: 1,
                filename: "/usr/bin/curl".into(),
                args: vec!["curl".into(), "-s".into(), "a b".into()],
                args_truncated: true,
                retval: -2,
                error: Some("ENOENT".into()),
            })),
            ev(EventData::Exit(ExitEvent {
                kind: "exit".into(),
                ppid: 1,
                exit_code: None,
                signal: Some(9),
                core_dumped: true,
                lifetime_ns: 1_500_000,
            })),
            ev(EventData::Tcp(TcpEvent {
                dialed_addr: Box::default(),
                dialed_port: 0,
                kind: TcpKind::Close,
                role: "client".into(),
                family: "ipv6".into(),
                saddr: "::1".into(),
                daddr: "fe80::1".into(),
                sport: 40000,
                dport: 443,
                state: "CLOSE".into(),
                duration_ns: Some(2_000_000),
                tx_bytes: Some(5000),
                rx_bytes: Some(100),
                retransmits: Some(2),
                error: None,
            })),
            ev(EventData::Bio(BioEvent {
                kind: "io".into(),
                disk: "vda".into(),
                dev: "254:0".into(),
                op: "write".into(),
                sector: 8,
                bytes: 4096,
                latency_ns: 120_000,
                queued_ns: 3_000,
                sync: true,
                error: Some(-5),
            })),
            ev(EventData::Cache(CacheEvent {
                kind: "interval".into(),
                ppid: 1,
                hits: 10,
                misses: 2,
                dirtied: 1,
                added: 2,
                hit_ratio: Some(0.8333),
                interval_ns: 1_000_000_000,
                method: "fentry".into(),
            })),
            ev(EventData::Open(OpenEvent {
                kind: "open".into(),
                path: "/etc/hosts".into(),
                dirfd: None,
                flags: 0,
                flags_str: "O_RDONLY".into(),
                mode: 0,
                fd: None,
                errno: Some(13),
                error: Some("EACCES".into()),
            })),
        ]
    }

    /// The remote columns are the local ones plus the NODE column, for
    /// every probe: the event goes through the agent's JSON and back.
    #[test]
    fn remote_columns_are_the_local_ones_with_a_node_column() {
        for ev in every_probe() {
            let mut local = Vec::new();
            {
                let mut c = podscope_pipeline::Columns::new(&mut local);
                podscope_pipeline::Sink::event(&mut c, &ev).unwrap();
            }
            let local = String::from_utf8(local).unwrap();
            let local = local.lines().nth(1).unwrap();
            // Over REST (its JSON line) and over gRPC (its record), typed.
            let line = serde_json::to_string(&ev).unwrap();
            let rest = Received::from_json(&line).unwrap();
            assert_eq!(rest, Received::Event(Box::new(ev.clone())));
            let grpc = Received::from_record(crate::records::event(&ev));
            assert_eq!(grpc, rest);
            let remote = columns(&rest);
            // TIME(UTC) is 12 wide, then the NODE column (10 and a space).
            let without_node = format!("{}{}", &remote[..12], &remote[12 + 11..]);
            assert_eq!(without_node, local, "probe {}", ev.probe());
            assert_eq!(&remote[13..19], "node-1");
        }
    }

    #[test]
    fn not_a_hub_says_so() {
        let m = not_a_hub(
            "http://web:80",
            404,
            "GET",
            "/v1/pods",
            "404 page not found\n",
        );
        assert!(
            m.starts_with("http://web:80 does not look like a podscope hub"),
            "{m}"
        );
        assert!(
            m.contains(r#"answered 404 to GET /v1/pods with "404 page not found""#),
            "{m}"
        );
        assert!(!m.contains("null"), "{m}");
    }

    #[test]
    fn the_summary_adds_up_to_what_was_printed() {
        let mut counts = std::collections::BTreeMap::new();
        counts.insert(
            "node-1".to_string(),
            NodeCount {
                printed: 5,
                skipped: 1,
                summary: Some(crate::proto::Summary {
                    events: 9,
                    emitted: Some(6),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let s = summary_text(&counts, Some(5), "printed");
        assert!(
            s.starts_with("podscope: 5 events printed (--max-events 5; 1 more arrived before the session stopped), 0 lost in the kernel"),
            "{s}"
        );
        assert!(
            s.contains("node node-1: 5 printed + 1 after --max-events = 6 the trace wrote; 0 lost"),
            "{s}"
        );
        // A node whose agent was killed sends no summary: what it printed still counts.
        counts.insert(
            "node-2".to_string(),
            NodeCount {
                printed: 12,
                gaps: 3,
                lost: 2,
                node_lost: true,
                ..Default::default()
            },
        );
        let s = summary_text(&counts, None, "printed");
        assert!(
            s.starts_with("podscope: 17 events printed, 2 lost in the kernel, 3 not delivered"),
            "{s}"
        );
        assert!(
            s.contains("node node-2: 12 printed + 3 not delivered; no summary from its trace (the node was lost); 2 lost"),
            "{s}"
        );
    }
}
