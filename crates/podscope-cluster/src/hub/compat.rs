//! container-tracer's REST surface on the hub, so its users' scripts keep
//! working: `GET /v1/trace-hooks`, `POST /v1/trace-session`, `PUT`, `GET`
//! and `DELETE /v1/trace-session/{id|all}`, in its JSON shapes (capitalised
//! keys, `trace-hook`, `trace-arguments` in its own flag syntax). Each is a
//! thin front over the hub's own session operations (service.rs): a
//! container-tracer session is a podscope session, listed by both APIs.
//! Its `GET /v1/pods` is not served (podscope's own answer is at that path).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Hub;
use crate::api::{
    ApiError, CreateSession, HookRequest, PodQuery, SessionQuery, SessionView, UpdateSession,
};

/// What a container-tracer session was created with, beyond podscope's spec.
#[derive(Debug, Clone, Default)]
pub(super) struct Meta {
    hook: String,
    params: Vec<String>,
    context: Option<String>,
}

/// container-tracer's extra fields per session id.
pub(super) type Metas = Arc<Mutex<BTreeMap<String, Meta>>>;

/// `POST /v1/trace-session`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CtCreate {
    /// Pod name or glob (every namespace).
    #[serde(default)]
    pub pod: Option<String>,
    /// Container name or glob.
    #[serde(default)]
    pub container: Option<String>,
    /// A name from `GET /v1/trace-hooks` (`trace_syscalls`, ...).
    #[serde(rename = "trace-hook")]
    pub trace_hook: String,
    /// The hook's arguments in container-tracer's syntax (`-s openat -t 5000`).
    #[serde(rename = "trace-arguments", default)]
    pub trace_arguments: String,
    /// Free text kept with the session.
    #[serde(rename = "trace-user-context", default)]
    pub trace_user_context: Option<String>,
}

/// `PUT /v1/trace-session/{id}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CtRun {
    /// Start (true) or stop (false).
    #[serde(rename = "Run")]
    pub run: bool,
}

/// One session as container-tracer describes it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CtSession {
    /// Traced pods (by name) and their traced containers.
    #[serde(rename = "Containers")]
    pub containers: BTreeMap<String, Vec<String>>,
    /// `trace-user-context`.
    #[serde(rename = "Context")]
    pub context: Option<String>,
    /// The first node's error, if a node failed the session.
    #[serde(rename = "Error")]
    pub error: Option<String>,
    /// Session id (podscope's).
    #[serde(rename = "Id")]
    pub id: String,
    /// The nodes it runs on, comma-separated.
    #[serde(rename = "Node")]
    pub node: String,
    /// Where its records are: the session's NDJSON stream.
    #[serde(rename = "Output")]
    pub output: Option<String>,
    /// Running now.
    #[serde(rename = "Running")]
    pub running: bool,
    /// The hook it was created with.
    #[serde(rename = "TraceHook")]
    pub trace_hook: String,
    /// Its arguments, split.
    #[serde(rename = "TraceParams")]
    pub trace_params: Vec<String>,
}

/// One trace hook as `GET /v1/trace-hooks` lists it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CtTracer {
    /// What it does and its arguments, one line each.
    #[serde(rename = "Description")]
    pub description: Vec<String>,
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// A directory of trace hooks (container-tracer's grouping).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CtHooks {
    /// Hooks by name.
    #[serde(rename = "Tracers")]
    pub tracers: BTreeMap<String, CtTracer>,
}

const TIME_LINE: &str =
    "-t, --time TIME : Duration of the trace in milliseconds, optional argument";

/// `GET /v1/trace-hooks`: `trace_syscalls` as container-tracer has it (plus
/// podscope's `-e` and `--summary`), `trace_tracepoint`, and `trace_PROBE`
/// for every probe.
pub(super) fn hooks() -> Vec<BTreeMap<String, CtHooks>> {
    let mut tracers = BTreeMap::new();
    for k in podscope_model::hooks::hook_kinds()
        .into_iter()
        .filter(|k| k.kind != podscope_model::hooks::FTRACE)
    {
        let name = format!("trace_{}", k.kind);
        let mut description = vec![k.description.to_string()];
        match k.kind {
            "syscalls" => description.extend([
                "-s, --syscall [SYSCALL ...] : list of System call names to be traced, optional argument.".to_string(),
                "If no system calls are specified, all available are traced.".to_string(),
                "-e, --errors-only : only calls that failed, optional argument.".to_string(),
                "--summary : per container and syscall totals instead of a record per call, optional argument.".to_string(),
            ]),
            "tracepoint" => description.extend([
                "-e, --event [SUBSYSTEM:EVENT ...] : tracepoints to be traced, mandatory argument.".to_string(),
                "-f, --filter EXPR : FIELD OP VALUE joined by && and || (&& binds tighter), optional argument (quote it).".to_string(),
            ]),
            _ => {}
        }
        description.push(TIME_LINE.to_string());
        tracers.insert(name.clone(), CtTracer { description, name });
    }
    vec![BTreeMap::from([(
        "podscope".to_string(),
        CtHooks { tracers },
    )])]
}

/// Splits `-s openat connect -f 'len > 1000'` like a shell (quotes group,
/// commas separate list items too).
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!("trace-arguments '{s}': a quote is not closed"));
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// The podscope request for a container-tracer one.
fn request(c: &CtCreate) -> Result<(CreateSession, Vec<String>), String> {
    let hook = c.trace_hook.trim();
    let Some(kind) = hook.strip_prefix("trace_").filter(|k| {
        podscope_model::hooks::hook_kinds()
            .iter()
            .any(|h| h.kind == *k)
    }) else {
        let names: Vec<String> = podscope_model::hooks::hook_kinds()
            .iter()
            .map(|h| format!("trace_{}", h.kind))
            .collect();
        return Err(format!(
            "trace-hook '{hook}' is not one of {} (GET /v1/trace-hooks)",
            names.join(", ")
        ));
    };
    let params = words(&c.trace_arguments)?;
    let mut list: Vec<String> = Vec::new();
    let mut filter = None;
    let mut time_ms: Option<u64> = None;
    let (mut errors_only, mut summary) = (false, false);
    let flags = match kind {
        "syscalls" => "-s/--syscall, -e/--errors-only, --summary, -t/--time",
        "tracepoint" => "-e/--event, -f/--filter, -t/--time",
        _ => "-t/--time",
    };
    let mut it = params.iter().peekable();
    while let Some(w) = it.next() {
        let mut value = |what: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("trace-arguments: {w} needs {what}"))
        };
        match (kind, w.as_str()) {
            (_, "-t" | "--time") => {
                let v = value("milliseconds")?;
                time_ms = Some(v.parse().map_err(|_| {
                    format!("trace-arguments: {w} '{v}' is not a number of milliseconds")
                })?);
            }
            ("syscalls", "-s" | "--syscall") | ("tracepoint", "-e" | "--event") => {
                let mut n = 0;
                while let Some(v) = it.next_if(|v| !v.starts_with('-')) {
                    list.extend(v.split(',').filter(|x| !x.is_empty()).map(str::to_string));
                    n += 1;
                }
                if n == 0 {
                    return Err(format!("trace-arguments: {w} needs at least one name"));
                }
            }
            ("syscalls", "-e" | "--errors-only") => errors_only = true,
            ("syscalls", "--summary") => summary = true,
            ("tracepoint", "-f" | "--filter") => filter = Some(value("an expression")?),
            (_, other) => {
                return Err(format!(
                    "trace-arguments: {hook} has no argument '{other}'; it takes {flags}"
                ))
            }
        }
    }
    let mut args = serde_json::Map::new();
    match kind {
        "syscalls" => {
            if !list.is_empty() {
                args.insert("syscall".into(), list.into());
            }
            if errors_only {
                args.insert("errors_only".into(), true.into());
            }
            if summary {
                args.insert("summary".into(), true.into());
            }
        }
        "tracepoint" => {
            if list.is_empty() {
                return Err("trace-arguments: trace_tracepoint needs -e SUBSYSTEM:EVENT".into());
            }
            args.insert("name".into(), list.into());
            if let Some(f) = filter {
                args.insert("filter".into(), f.into());
            }
        }
        _ => {}
    }
    Ok((
        CreateSession {
            all_namespaces: true,
            pod: c.pod.clone().filter(|p| !p.is_empty()),
            container: c.container.clone().filter(|p| !p.is_empty() && p != "*"),
            duration: time_ms.map(|ms| format!("{ms}ms")),
            start: Some(false),
            hook: Some(HookRequest {
                kind: kind.to_string(),
                args,
            }),
            ..Default::default()
        },
        params,
    ))
}

impl Hub {
    /// container-tracer's description of a session.
    fn ct_view(&self, s: &SessionView) -> CtSession {
        let meta = lock(&self.compat)
            .get(&s.id)
            .cloned()
            .unwrap_or_else(|| Meta {
                hook: s
                    .spec
                    .probes
                    .iter()
                    .map(|p| format!("trace_{p}"))
                    .collect::<Vec<_>>()
                    .join(","),
                ..Meta::default()
            });
        let pods = self
            .list_pods(PodQuery {
                all_namespaces: true,
                ..PodQuery::default()
            })
            .unwrap_or_default();
        let mut containers = BTreeMap::new();
        let all: Vec<_> = pods.into_iter().map(|p| p.pod).collect();
        for p in s.spec.selection.select(&all) {
            containers.insert(
                p.name.clone(),
                p.containers.iter().map(|c| c.name.clone()).collect(),
            );
        }
        CtSession {
            containers,
            context: meta.context,
            error: s.nodes.values().find_map(|n| n.error.clone()),
            id: s.id.clone(),
            node: s.nodes.keys().cloned().collect::<Vec<_>>().join(","),
            output: Some(format!("/v1/sessions/{}/events", s.id)),
            running: s.state == "running",
            trace_hook: meta.hook,
            trace_params: meta.params,
        }
    }

    /// `POST /v1/trace-session`: created stopped, as container-tracer does.
    pub(super) fn ct_create(&self, c: &CtCreate) -> Result<BTreeMap<String, CtSession>, ApiError> {
        let (req, params) = request(c).map_err(ApiError::bad_request)?;
        let view = self.create_session(req)?;
        lock(&self.compat).insert(
            view.id.clone(),
            Meta {
                hook: c.trace_hook.trim().to_string(),
                params,
                context: c.trace_user_context.clone(),
            },
        );
        Ok(BTreeMap::from([(view.id.clone(), self.ct_view(&view))]))
    }

    /// `GET /v1/trace-session/{id|all}`.
    pub(super) fn ct_get(&self, id: &str) -> Result<BTreeMap<String, CtSession>, ApiError> {
        let views = if id == "all" {
            self.list_sessions(&SessionQuery::default())
        } else {
            vec![self.get_session(id)?]
        };
        Ok(views
            .iter()
            .map(|v| (v.id.clone(), self.ct_view(v)))
            .collect())
    }

    /// `PUT /v1/trace-session/{id}`.
    pub(super) fn ct_run(&self, id: &str, r: &CtRun) -> Result<Empty, ApiError> {
        let state = if r.run { "running" } else { "stopped" };
        self.update_session(
            id,
            &UpdateSession {
                state: state.into(),
            },
        )?;
        Ok(Empty {})
    }

    /// `DELETE /v1/trace-session/{id|all}`.
    pub(super) fn ct_delete(&self, id: &str) -> Result<Empty, ApiError> {
        let gone = if id == "all" {
            self.delete_sessions(&SessionQuery::default()).deleted
        } else {
            self.delete_session(id)?.deleted
        };
        let mut m = lock(&self.compat);
        for id in gone {
            m.remove(&id);
        }
        Ok(Empty {})
    }
}

/// container-tracer's empty answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Empty {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(hook: &str, args: &str) -> Result<(CreateSession, Vec<String>), String> {
        request(&CtCreate {
            pod: Some("web-*".into()),
            container: Some("*".into()),
            trace_hook: hook.into(),
            trace_arguments: args.into(),
            trace_user_context: None,
        })
    }

    #[test]
    fn container_tracer_arguments_become_hooks() {
        let (r, p) = ct("trace_syscalls", "-s openat connect -t 5000").unwrap();
        assert_eq!(p, ["-s", "openat", "connect", "-t", "5000"]);
        let h = r.hook.unwrap();
        assert_eq!(h.kind, "syscalls");
        assert_eq!(h.args["syscall"], serde_json::json!(["openat", "connect"]));
        assert_eq!(r.duration.as_deref(), Some("5000ms"));
        assert!(r.all_namespaces && r.container.is_none() && r.start == Some(false));
        let (r, _) = ct("trace_tracepoint", "-e net:net_dev_xmit -f 'len > 1000'").unwrap();
        let h = r.hook.unwrap();
        assert_eq!(h.args["name"], serde_json::json!(["net:net_dev_xmit"]));
        assert_eq!(h.args["filter"], "len > 1000");
        assert!(ct("trace_exec", "")
            .unwrap()
            .0
            .hook
            .unwrap()
            .args
            .is_empty());
        let e = ct("trace_syscalls", "-x").unwrap_err();
        assert!(
            e.contains("has no argument '-x'") && e.contains("-s/--syscall"),
            "{e}"
        );
        let e = ct("trace_sys", "").unwrap_err();
        assert!(e.contains("trace_syscalls"), "{e}");
        assert!(ct("trace_syscalls", "-t soon")
            .unwrap_err()
            .contains("milliseconds"));
        assert!(ct("trace_tracepoint", "-f 'a == 1")
            .unwrap_err()
            .contains("quote"));
    }
}
