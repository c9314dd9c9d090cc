//! The hub's operations, typed: one service layer that the REST (axum) and
//! gRPC (tonic) front ends both wrap. Each operation validates its input,
//! does its work on the hub's state and answers with a typed value or an
//! [`ApiError`]; the front ends only turn those into their wire forms, so
//! both APIs accept, answer and fail in the same words.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podscope_model::ProbeKind;
use tokio::sync::mpsc;

use super::{
    hub_message, rfc3339, send_to, stop_session, Hub, HubMessage, HubState, Line, Session,
    Subscriber,
};
use crate::api::{
    ApiError, ContainerUsageView, CreateSession, Deleted, ErrorKind, ExecBody, ExecView, HookView,
    NodePod, NodeView, PodQuery, ProbeView, Selection, SessionQuery, SessionView, UpdateSession,
};
use crate::proto::ExecRequest;

/// The longest exec a request may ask for.
const EXEC_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The namespace kinds an exec may join.
const NAMESPACE_KINDS: [&str; 6] = ["net", "pid", "mnt", "uts", "ipc", "cgroup"];

/// A client's subscription to a session's records: batches of JSON records,
/// the first one saying the session's state. `queued` counts what waits in
/// the channel (the client's bound, `--client-queue`); whoever drains the
/// channel takes the batch's length off it.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// The records, one batch per agent batch.
    pub rx: mpsc::UnboundedReceiver<Vec<Line>>,
    /// Records queued and not yet taken.
    pub queued: Arc<AtomicUsize>,
}

impl SessionQuery {
    /// Wildcards match the session's own pod/container pattern (container-tracer's model).
    fn matches(&self, s: &Session) -> bool {
        let g = |pat: &Option<String>, val: &Option<String>| {
            pat.as_ref().is_none_or(|p| {
                podscope_runtime::names::glob_match(p, val.as_deref().unwrap_or("*"))
            })
        };
        g(&self.pod, &s.spec.selection.pod)
            && g(&self.container, &s.spec.selection.container)
            && g(&self.namespace, &s.spec.selection.namespace)
            && self.state.as_ref().is_none_or(|st| st == s.state)
    }
}

/// The selection a pod query asks for: no filter at all lists every
/// namespace, as `podscope ps` does.
fn pod_selection(q: &PodQuery) -> Result<Selection, ApiError> {
    let any =
        q.pod.is_some() || q.namespace.is_some() || q.selector.is_some() || q.container.is_some();
    Selection::new(
        q.pod.clone(),
        q.namespace.clone(),
        q.all_namespaces || !any,
        q.selector.clone(),
        q.container.clone(),
    )
    .map_err(ApiError::bad_request)
}

/// The answer for an id the hub does not know.
fn unknown(st: &HubState, id: &str) -> ApiError {
    // Ids start with the hub's boot tag: one from an earlier hub means it
    // restarted. Such a session comes back when the agents that kept running
    // it re-register (within seconds), so this is "not found (yet)".
    match id.split_once('-') {
        Some((boot, n)) if boot != st.boot && n.parse::<u64>().is_ok() => {
            ApiError::not_found(format!(
                "no session {id} here yet: it is from before the hub restarted, and it comes back \
                 when the agents that kept it running re-register (within seconds, if they kept it)"
            ))
        }
        _ => ApiError::not_found(format!("no session {id}")),
    }
}

fn remove_session(st: &mut HubState, id: &str) {
    stop_session(st, id, "deleted");
    if let Some(mut s) = st.sessions.remove(id) {
        if !s.subscribers.is_empty() {
            s.control(crate::proto::ControlRecord {
                session: Some(id.to_string()),
                state: Some("deleted".into()),
                reason: Some("deleted".into()),
                ..super::ctl("end")
            });
        }
        // Agents whose run is still stopping get the stop already; their late records are ignored.
    }
}

impl Hub {
    /// `GET /v1/nodes`: every node that registered, up or down.
    pub(crate) fn list_nodes(&self) -> Vec<NodeView> {
        let st = self.lock();
        st.nodes
            .iter()
            .map(|(name, n)| NodeView {
                node: name.clone(),
                state: if n.up { "up" } else { "down" }.into(),
                kernel: n.kernel.clone(),
                probes: n.probes.clone(),
                pods: n.pods.len(),
                last_seen: rfc3339(n.last_seen),
                registered: rfc3339(n.registered),
                exec_enabled: n.exec_enabled,
                version: n.version.clone(),
            })
            .collect()
    }

    /// `GET /v1/pods`: the pods the nodes report that the query chooses.
    pub(crate) fn list_pods(&self, q: PodQuery) -> Result<Vec<NodePod>, ApiError> {
        let sel = pod_selection(&q)?;
        let st = self.lock();
        let mut out = Vec::new();
        for (name, n) in &st.nodes {
            if q.node.as_ref().is_some_and(|want| want != name) {
                continue;
            }
            for pod in sel.select(&n.pods) {
                let usage = q.usage.then(|| {
                    pod.containers
                        .iter()
                        .map(|c| {
                            let k = (pod.namespace.clone(), pod.name.clone(), c.name.clone());
                            let u = n.usage.get(&k).cloned().unwrap_or_default();
                            ContainerUsageView {
                                container: c.name.clone(),
                                cpu_percent: u.cpu_percent,
                                cpu_seconds: u.cpu_seconds,
                                memory_bytes: u.memory_bytes,
                            }
                        })
                        .collect()
                });
                out.push(NodePod {
                    node: name.clone(),
                    pod,
                    usage,
                });
            }
        }
        Ok(out)
    }

    /// [`Hub::list_pods`] as its JSON answer, from each pod's JSON made when
    /// its node reported it (a pod narrowed to some containers is made
    /// afresh): 5,000 pods cost a copy, not a clone and a serialisation.
    pub(crate) fn list_pods_json(&self, q: PodQuery) -> Result<String, ApiError> {
        if q.usage {
            // Usage changes with every report: made afresh.
            let pods = self.list_pods(q)?;
            return serde_json::to_string(&pods)
                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()));
        }
        let sel = pod_selection(&q)?;
        let st = self.lock();
        let size: usize = st
            .nodes
            .values()
            .flat_map(|n| n.pods_json.iter().map(|j| j.len() + 1))
            .sum();
        let mut out = String::with_capacity(size + 2);
        out.push('[');
        for (name, n) in &st.nodes {
            if q.node.as_ref().is_some_and(|want| want != name) {
                continue;
            }
            for (pod, json) in n.pods.iter().zip(&n.pods_json) {
                if !sel.matches_pod(pod) {
                    continue;
                }
                let fresh;
                let json = if sel.container.is_some() {
                    let Some(narrowed) = sel.select(std::slice::from_ref(pod)).pop() else {
                        continue;
                    };
                    fresh = serde_json::to_string(&NodePod {
                        node: name.clone(),
                        pod: narrowed,
                        usage: None,
                    })
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
                    fresh.as_str()
                } else {
                    json
                };
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(json);
            }
        }
        out.push(']');
        Ok(out)
    }

    /// `GET /v1/probes`: every probe and the nodes whose kernel supports it.
    pub(crate) fn list_probes(&self) -> Vec<ProbeView> {
        let st = self.lock();
        ProbeKind::ALL
            .iter()
            .map(|p| ProbeView {
                probe: p.name().to_string(),
                description: p.description().to_string(),
                nodes: st
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.probes.iter().any(|x| x == p.name()))
                    .map(|(k, _)| k.clone())
                    .collect(),
            })
            .collect()
    }

    /// `GET /v1/hooks`: the hook kinds a session can use, with their
    /// arguments (the catalogue `podscope hooks` prints).
    pub(crate) fn list_hooks(&self) -> Vec<HookView> {
        podscope_model::hooks::hook_kinds()
            .iter()
            .map(HookView::from)
            .collect()
    }

    /// `POST /v1/sessions`.
    pub(crate) fn create_session(&self, req: CreateSession) -> Result<SessionView, ApiError> {
        let spec = req.validate().map_err(ApiError::bad_request)?;
        let mut st = self.lock();
        if req.wait == Some(false) {
            // As `podscope trace` on a node: a selection that matches nothing
            // is a mistake to show, not a session that waits in silence.
            let known: Vec<NodePod> = st
                .nodes
                .iter()
                .filter(|(_, n)| n.up)
                .flat_map(|(name, n)| {
                    n.pods.iter().map(|p| NodePod {
                        node: name.clone(),
                        pod: p.clone(),
                        usage: None,
                    })
                })
                .collect();
            if let Some(msg) = spec.selection.no_match(&known) {
                return Err(ApiError::not_found(format!(
                    "nothing to trace (add --wait, or \"wait\": true, to wait for matching pods): {msg}"
                )));
            }
        }
        let id = format!("{}-{}", st.boot, st.next_id);
        st.next_id += 1;
        st.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                spec,
                state: "created",
                created_at: SystemTime::now(),
                started_at: None,
                stopped_at: None,
                stop_reason: None,
                run: 0,
                nodes: BTreeMap::new(),
                subscribers: Vec::new(),
                resumed: false,
                hops: super::HopCounts::default(),
            },
        );
        if req.start.unwrap_or(true) {
            self.start_session(&mut st, &id);
        }
        eprintln!("podscope hub: session {id} created");
        Ok(st.sessions[&id].view())
    }

    /// `GET /v1/sessions`.
    pub(crate) fn list_sessions(&self, q: &SessionQuery) -> Vec<SessionView> {
        let st = self.lock();
        st.sessions
            .values()
            .filter(|s| q.matches(s))
            .map(Session::view)
            .collect()
    }

    /// `GET /v1/sessions/{id}`.
    pub(crate) fn get_session(&self, id: &str) -> Result<SessionView, ApiError> {
        let st = self.lock();
        match st.sessions.get(id) {
            Some(s) => Ok(s.view()),
            None => Err(unknown(&st, id)),
        }
    }

    /// `PUT /v1/sessions/{id}`: start or stop it.
    pub(crate) fn update_session(
        &self,
        id: &str,
        req: &UpdateSession,
    ) -> Result<SessionView, ApiError> {
        let mut st = self.lock();
        if !st.sessions.contains_key(id) {
            return Err(unknown(&st, id));
        }
        match req.state.as_str() {
            "running" => {
                if st.sessions[id].state == "stopping" {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!("session {id} is still stopping; try again in a moment"),
                    ));
                }
                self.start_session(&mut st, id)
            }
            "stopped" => stop_session(&mut st, id, "requested"),
            other => {
                return Err(ApiError::bad_request(format!(
                    "state '{other}' is not one of running, stopped"
                )))
            }
        }
        Ok(st.sessions[id].view())
    }

    /// `DELETE /v1/sessions/{id}`.
    pub(crate) fn delete_session(&self, id: &str) -> Result<Deleted, ApiError> {
        let mut st = self.lock();
        if !st.sessions.contains_key(id) {
            return Err(unknown(&st, id));
        }
        remove_session(&mut st, id);
        Ok(Deleted {
            deleted: vec![id.to_string()],
        })
    }

    /// `DELETE /v1/sessions`: every session the query chooses.
    pub(crate) fn delete_sessions(&self, q: &SessionQuery) -> Deleted {
        let mut st = self.lock();
        let ids: Vec<String> = st
            .sessions
            .values()
            .filter(|s| q.matches(s))
            .map(|s| s.id.clone())
            .collect();
        for id in &ids {
            remove_session(&mut st, id);
        }
        Deleted { deleted: ids }
    }

    /// `GET /v1/sessions/{id}/events`: a new subscriber to the session's
    /// records, bounded by `--client-queue`.
    pub(crate) fn subscribe(&self, id: &str) -> Result<Subscription, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel::<Vec<Line>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(id) else {
            return Err(unknown(&st, id));
        };
        if s.state == "stopped" {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("session {id} is stopped: start it (PUT {{\"state\":\"running\"}}) and stream again"),
            ));
        }
        let _ = tx.send(vec![super::Rec::new(crate::records::control(
            crate::proto::ControlRecord {
                session: Some(id.to_string()),
                state: Some(s.state.to_string()),
                ..super::ctl("session")
            },
        ))]);
        s.subscribers.push(Subscriber {
            tx,
            queued: queued.clone(),
            limit: self.client_queue,
            missed: BTreeMap::new(),
            missed_total: BTreeMap::new(),
        });
        Ok(Subscription { rx, queued })
    }

    /// `POST /v1/exec`: runs a host tool in one pod's namespaces on its
    /// node and waits for its end.
    pub(crate) async fn exec(&self, b: ExecBody) -> Result<ExecView, ApiError> {
        if !self.enable_exec {
            eprintln!("podscope hub: refused an exec request: exec is disabled");
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "exec through the hub is disabled; it needs --enable-exec on both the hub and the agent",
            ));
        }
        let ns = b.namespace.clone().unwrap_or_else(|| "default".into());
        crate::api::check_exec_target(&ns, &b.pod, &b.command).map_err(ApiError::bad_request)?;
        let timeout = match b.timeout.as_deref().map(crate::api::parse_duration) {
            None => Duration::from_secs(30),
            Some(Ok(d)) if d <= EXEC_MAX_TIMEOUT => d,
            Some(Ok(_)) => {
                return Err(ApiError::bad_request(
                    "exec timeout is longer than the maximum of 10m",
                ))
            }
            Some(Err(e)) => return Err(ApiError::bad_request(e)),
        };
        let namespaces = b.namespaces.clone().unwrap_or_default();
        if let Some(bad) = namespaces
            .iter()
            .find(|n| !NAMESPACE_KINDS.contains(&n.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "unknown namespace kind {bad:?}; use net, pid, mnt, uts, ipc or cgroup"
            )));
        }
        let (id, rx) = {
            let mut st = self.lock();
            let found = st
                .nodes
                .iter()
                .find(|(_, n)| n.up && n.pods.iter().any(|p| p.namespace == ns && p.name == b.pod));
            let Some((node, entry)) = found else {
                let all: Vec<String> = st
                    .nodes
                    .values()
                    .filter(|n| n.up)
                    .flat_map(|n| n.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)))
                    .collect();
                let near = podscope_runtime::names::closest_names(
                    &format!("{ns}/{}", b.pod),
                    all.iter().map(String::as_str),
                    3,
                );
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean {}?", near.join(", "))
                };
                return Err(ApiError::not_found(format!(
                    "no pod {ns}/{} on any connected node{hint}",
                    b.pod
                )));
            };
            if !entry.exec_enabled {
                eprintln!(
                    "podscope hub: refused exec in {ns}/{}: node {node}'s agent has exec disabled",
                    b.pod
                );
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    format!(
                        "exec is disabled on node {node}: its agent runs without --enable-exec"
                    ),
                ));
            }
            let node = node.clone();
            let id = format!("exec-{}-{}", st.boot, st.next_id);
            st.next_id += 1;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let req = ExecRequest {
                id: id.clone(),
                namespace: ns.clone(),
                pod: b.pod.clone(),
                container: b.container.clone().unwrap_or_default(),
                command: b.command.clone(),
                namespaces,
                timeout_ms: timeout.as_millis() as u64,
            };
            eprintln!(
                "podscope hub: AUDIT exec {id} on node {node} in {ns}/{} container {:?}: {:?}",
                b.pod, b.container, b.command
            );
            if let Some(entry) = st.nodes.get(&node) {
                send_to(
                    entry,
                    HubMessage {
                        msg: Some(hub_message::Msg::Exec(req)),
                    },
                );
            }
            st.execs.insert(id.clone(), (node, tx));
            (id, rx)
        };
        let answer = tokio::time::timeout(timeout + Duration::from_secs(10), rx).await;
        self.lock().execs.remove(&id);
        let r = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    ErrorKind::NodeGone,
                    "the node's agent disconnected before the exec finished",
                ))
            }
            Err(_) => {
                return Err(ApiError::new(
                    ErrorKind::NodeTimeout,
                    "the node's agent did not answer the exec in time",
                ))
            }
        };
        if !r.error.is_empty() {
            let kind = if r.error.contains("disabled") {
                ErrorKind::Forbidden
            } else {
                ErrorKind::BadRequest
            };
            return Err(ApiError::new(kind, format!("node {}: {}", r.node, r.error)));
        }
        Ok(ExecView {
            node: r.node,
            namespace: ns,
            pod: b.pod,
            exit_code: r.exit_code,
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            truncated: r.truncated,
        })
    }
}
