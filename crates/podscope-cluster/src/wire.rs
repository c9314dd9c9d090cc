//! The API's typed values as their protobuf messages and back: one mapping,
//! used by the hub's gRPC front end and the CLI's gRPC client, so the two
//! APIs carry the same fields. Unit tests round-trip every type.

use std::collections::BTreeMap;

use podscope_runtime::{Container, Pod};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    ContainerUsageView, CreateSession, Deleted, ExecBody, ExecView, HookArgView, HookView, NodePod,
    NodeSession, NodeView, PodQuery, ProbeView, Selection, SessionQuery, SessionSpec, SessionView,
    SummaryProbe, SummaryView, SyscallsHook, TracepointHook,
};
use crate::proto;

/// A unit enum's serde name (`ready`, `cri`, ...).
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A unit enum from its serde name, or a clear error.
fn parse<T: DeserializeOwned>(what: &str, s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{what} '{s}' is not one the API knows"))
}

impl From<&Container> for proto::Container {
    fn from(c: &Container) -> Self {
        proto::Container {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            pid: c.pid,
            cgroup_path: c.cgroup_path.clone(),
            cgroup_id: c.cgroup_id,
            state: name(&c.state),
        }
    }
}

impl TryFrom<proto::Container> for Container {
    type Error = String;
    fn try_from(c: proto::Container) -> Result<Self, String> {
        Ok(Container {
            id: c.id,
            name: c.name,
            image: c.image,
            pid: c.pid,
            cgroup_path: c.cgroup_path,
            cgroup_id: c.cgroup_id,
            state: parse("container state", &c.state)?,
        })
    }
}

impl From<&Pod> for proto::Pod {
    fn from(p: &Pod) -> Self {
        proto::Pod {
            uid: p.uid.clone(),
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            labels: p.labels.clone().into_iter().collect(),
            runtime: p.runtime.clone(),
            sandbox_id: p.sandbox_id.clone(),
            state: name(&p.state),
            ip: p.ip.clone(),
            sandbox_pid: p.sandbox_pid,
            cgroup_path: p.cgroup_path.clone(),
            cgroup_id: p.cgroup_id,
            source: name(&p.source),
            containers: p.containers.iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<proto::Pod> for Pod {
    type Error = String;
    fn try_from(p: proto::Pod) -> Result<Self, String> {
        Ok(Pod {
            uid: p.uid,
            name: p.name,
            namespace: p.namespace,
            labels: p.labels.into_iter().collect(),
            runtime: p.runtime,
            sandbox_id: p.sandbox_id,
            state: parse("pod state", &p.state)?,
            ip: p.ip,
            sandbox_pid: p.sandbox_pid,
            cgroup_path: p.cgroup_path,
            cgroup_id: p.cgroup_id,
            source: parse("pod source", &p.source)?,
            containers: p
                .containers
                .into_iter()
                .map(Container::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&NodePod> for proto::NodePod {
    fn from(p: &NodePod) -> Self {
        proto::NodePod {
            node: p.node.clone(),
            pod: Some((&p.pod).into()),
            usage: p.usage.as_ref().map(|u| proto::PodUsage {
                containers: u
                    .iter()
                    .map(|c| proto::ContainerUsageView {
                        container: c.container.clone(),
                        cpu_percent: c.cpu_percent,
                        cpu_seconds: c.cpu_seconds,
                        memory_bytes: c.memory_bytes,
                    })
                    .collect(),
            }),
        }
    }
}

impl TryFrom<proto::NodePod> for NodePod {
    type Error = String;
    fn try_from(p: proto::NodePod) -> Result<Self, String> {
        Ok(NodePod {
            node: p.node,
            pod: p.pod.ok_or("a NodePod without its pod")?.try_into()?,
            usage: p.usage.map(|u| {
                u.containers
                    .into_iter()
                    .map(|c| ContainerUsageView {
                        container: c.container,
                        cpu_percent: c.cpu_percent,
                        cpu_seconds: c.cpu_seconds,
                        memory_bytes: c.memory_bytes,
                    })
                    .collect()
            }),
        })
    }
}

impl From<&NodeView> for proto::NodeView {
    fn from(n: &NodeView) -> Self {
        proto::NodeView {
            node: n.node.clone(),
            state: n.state.clone(),
            kernel: n.kernel.clone(),
            probes: n.probes.clone(),
            pods: n.pods as u64,
            last_seen: n.last_seen.clone(),
            registered: n.registered.clone(),
            exec_enabled: n.exec_enabled,
            version: n.version.clone(),
        }
    }
}

impl From<proto::NodeView> for NodeView {
    fn from(n: proto::NodeView) -> Self {
        NodeView {
            node: n.node,
            state: n.state,
            kernel: n.kernel,
            probes: n.probes,
            pods: n.pods as usize,
            last_seen: n.last_seen,
            registered: n.registered,
            exec_enabled: n.exec_enabled,
            version: n.version,
        }
    }
}

impl From<PodQuery> for proto::PodQuery {
    fn from(q: PodQuery) -> Self {
        proto::PodQuery {
            pod: q.pod,
            namespace: q.namespace,
            all_namespaces: q.all_namespaces,
            selector: q.selector,
            container: q.container,
            node: q.node,
            usage: q.usage,
        }
    }
}

impl From<proto::PodQuery> for PodQuery {
    fn from(q: proto::PodQuery) -> Self {
        PodQuery {
            pod: q.pod,
            namespace: q.namespace,
            all_namespaces: q.all_namespaces,
            selector: q.selector,
            container: q.container,
            node: q.node,
            usage: q.usage,
        }
    }
}

impl From<&ProbeView> for proto::ProbeView {
    fn from(p: &ProbeView) -> Self {
        proto::ProbeView {
            probe: p.probe.clone(),
            description: p.description.clone(),
            nodes: p.nodes.clone(),
        }
    }
}

impl From<proto::ProbeView> for ProbeView {
    fn from(p: proto::ProbeView) -> Self {
        ProbeView {
            probe: p.probe,
            description: p.description,
            nodes: p.nodes,
        }
    }
}

impl From<&HookView> for proto::HookView {
    fn from(h: &HookView) -> Self {
        proto::HookView {
            kind: h.kind.clone(),
            description: h.description.clone(),
            usage: h.usage.clone(),
            args: h
                .args
                .iter()
                .map(|a| proto::HookArg {
                    name: a.name.clone(),
                    r#type: a.ty.clone(),
                    required: a.required,
                    flag: a.flag.clone(),
                    description: a.description.clone(),
                    example: a.example.clone(),
                })
                .collect(),
        }
    }
}

impl From<proto::HookView> for HookView {
    fn from(h: proto::HookView) -> Self {
        HookView {
            kind: h.kind,
            description: h.description,
            usage: h.usage,
            args: h
                .args
                .into_iter()
                .map(|a| HookArgView {
                    name: a.name,
                    ty: a.r#type,
                    required: a.required,
                    flag: a.flag,
                    description: a.description,
                    example: a.example,
                })
                .collect(),
        }
    }
}

impl From<&SyscallsHook> for proto::SyscallsHook {
    fn from(h: &SyscallsHook) -> Self {
        proto::SyscallsHook {
            syscall: h.syscall.clone(),
            errors_only: h.errors_only,
            summary: h.summary,
            interval: h.interval.clone(),
        }
    }
}

impl From<proto::SyscallsHook> for SyscallsHook {
    fn from(h: proto::SyscallsHook) -> Self {
        SyscallsHook {
            syscall: h.syscall,
            errors_only: h.errors_only,
            summary: h.summary,
            interval: h.interval,
        }
    }
}

impl From<&TracepointHook> for proto::TracepointHook {
    fn from(h: &TracepointHook) -> Self {
        proto::TracepointHook {
            name: h.name.clone(),
            filter: h.filter.clone(),
        }
    }
}

impl From<proto::TracepointHook> for TracepointHook {
    fn from(h: proto::TracepointHook) -> Self {
        TracepointHook {
            name: h.name,
            filter: h.filter,
        }
    }
}

impl From<CreateSession> for proto::CreateSessionRequest {
    /// Generic hooks (`kind` and `args`) travel as their typed settings or
    /// as probe names; their checks are the hub's (an argument of the wrong
    /// type is left out here and the hub's answer names what is missing).
    fn from(c: CreateSession) -> Self {
        let mut probes = c.probes;
        let mut syscalls = c.syscalls.as_ref().map(proto::SyscallsHook::from);
        let mut tracepoint = c.tracepoint.as_ref().map(proto::TracepointHook::from);
        for h in c.hook.iter().chain(&c.hooks) {
            let args = serde_json::Value::Object(h.args.clone());
            match h.kind.as_str() {
                "syscalls" => {
                    if let Ok(t) = serde_json::from_value::<SyscallsHook>(args) {
                        syscalls = Some((&t).into());
                    }
                }
                "tracepoint" => {
                    if let Ok(t) = serde_json::from_value::<TracepointHook>(args) {
                        tracepoint = Some((&t).into());
                    }
                }
                kind => probes.push(kind.to_string()),
            }
        }
        proto::CreateSessionRequest {
            namespace: c.namespace,
            all_namespaces: c.all_namespaces,
            pod: c.pod,
            container: c.container,
            selector: c.selector,
            probes,
            duration: c.duration,
            start: c.start,
            wait: c.wait,
            syscalls,
            tracepoint,
            otlp: c.otlp,
            ftrace_buffer_size: c.ftrace_buffer_size,
            capture: c.capture.as_ref().map(Into::into),
        }
    }
}

impl From<proto::CreateSessionRequest> for CreateSession {
    fn from(c: proto::CreateSessionRequest) -> Self {
        CreateSession {
            namespace: c.namespace,
            all_namespaces: c.all_namespaces,
            pod: c.pod,
            container: c.container,
            selector: c.selector,
            probes: c.probes,
            duration: c.duration,
            start: c.start,
            wait: c.wait,
            hook: None,
            hooks: Vec::new(),
            syscalls: c.syscalls.map(Into::into),
            tracepoint: c.tracepoint.map(Into::into),
            otlp: c.otlp,
            ftrace_buffer_size: c.ftrace_buffer_size,
            capture: c.capture.map(Into::into),
        }
    }
}

impl From<SessionQuery> for proto::SessionQuery {
    fn from(q: SessionQuery) -> Self {
        proto::SessionQuery {
            pod: q.pod,
            container: q.container,
            namespace: q.namespace,
            state: q.state,
        }
    }
}

impl From<proto::SessionQuery> for SessionQuery {
    fn from(q: proto::SessionQuery) -> Self {
        SessionQuery {
            pod: q.pod,
            container: q.container,
            namespace: q.namespace,
            state: q.state,
        }
    }
}

impl From<&SummaryView> for proto::Summary {
    fn from(s: &SummaryView) -> Self {
        proto::Summary {
            timestamp: s.timestamp.clone(),
            duration_ns: s.duration_ns,
            events: s.events,
            lost: s.lost,
            probes: s
                .probes
                .iter()
                .map(|p| proto::ProbeSummary {
                    probe: p.probe.clone(),
                    events: p.events,
                    lost: p.lost,
                    map_full: p.map_full,
                    queue_full: p.queue_full,
                })
                .collect(),
            emitted: s.emitted,
            node: s.node.clone(),
        }
    }
}

impl From<proto::Summary> for SummaryView {
    fn from(s: proto::Summary) -> Self {
        SummaryView {
            timestamp: s.timestamp,
            kind: "summary".into(),
            duration_ns: s.duration_ns,
            events: s.events,
            lost: s.lost,
            probes: s
                .probes
                .into_iter()
                .map(|p| SummaryProbe {
                    probe: p.probe,
                    events: p.events,
                    lost: p.lost,
                    map_full: p.map_full,
                    queue_full: p.queue_full,
                })
                .collect(),
            emitted: s.emitted,
            node: s.node,
        }
    }
}

impl From<&NodeSession> for proto::NodeSession {
    fn from(n: &NodeSession) -> Self {
        proto::NodeSession {
            state: n.state.clone(),
            events: n.events,
            lost: n.lost,
            gaps: n.gaps.clone().into_iter().collect(),
            error: n.error.clone(),
            summary: n.summary.as_ref().map(Into::into),
        }
    }
}

impl From<proto::NodeSession> for NodeSession {
    fn from(n: proto::NodeSession) -> Self {
        NodeSession {
            state: n.state,
            events: n.events,
            lost: n.lost,
            gaps: n.gaps.into_iter().collect(),
            error: n.error,
            summary: n.summary.map(Into::into),
        }
    }
}

impl From<&SessionView> for proto::SessionView {
    fn from(s: &SessionView) -> Self {
        let sel = &s.spec.selection;
        proto::SessionView {
            id: s.id.clone(),
            state: s.state.clone(),
            pod: sel.pod.clone(),
            namespace: sel.namespace.clone(),
            all_namespaces: sel.all_namespaces,
            selector: sel.selector.clone(),
            container: sel.container.clone(),
            probes: s.spec.probes.clone(),
            duration: s.spec.duration.clone(),
            duration_ms: s.spec.duration_ms,
            created_at: s.created_at.clone(),
            started_at: s.started_at.clone(),
            stopped_at: s.stopped_at.clone(),
            stop_reason: s.stop_reason.clone(),
            run: s.run,
            events: s.events,
            lost: s.lost,
            gaps: s.gaps,
            nodes: s.nodes.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            resumed: s.resumed,
            syscalls: s.spec.syscalls.as_ref().map(Into::into),
            tracepoint: s.spec.tracepoint.as_ref().map(Into::into),
            otlp: s.spec.otlp,
            ftrace_buffer_bytes: s.spec.ftrace_buffer_bytes,
            capture: s.spec.capture.as_ref().map(Into::into),
        }
    }
}

impl From<proto::SessionView> for SessionView {
    fn from(s: proto::SessionView) -> Self {
        SessionView {
            id: s.id,
            state: s.state,
            spec: SessionSpec {
                selection: Selection {
                    pod: s.pod,
                    namespace: s.namespace,
                    all_namespaces: s.all_namespaces,
                    selector: s.selector,
                    container: s.container,
                },
                probes: s.probes,
                duration: s.duration,
                duration_ms: s.duration_ms,
                syscalls: s.syscalls.map(Into::into),
                tracepoint: s.tracepoint.map(Into::into),
                otlp: s.otlp,
                ftrace_buffer_bytes: s.ftrace_buffer_bytes,
                capture: s.capture.map(Into::into),
            },
            created_at: s.created_at,
            started_at: s.started_at,
            stopped_at: s.stopped_at,
            stop_reason: s.stop_reason,
            run: s.run,
            events: s.events,
            lost: s.lost,
            gaps: s.gaps,
            nodes: s
                .nodes
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect::<BTreeMap<_, _>>(),
            resumed: s.resumed,
        }
    }
}

impl From<Deleted> for proto::Deleted {
    fn from(d: Deleted) -> Self {
        proto::Deleted { deleted: d.deleted }
    }
}

impl From<proto::Deleted> for Deleted {
    fn from(d: proto::Deleted) -> Self {
        Deleted { deleted: d.deleted }
    }
}

impl From<ExecBody> for proto::ExecCall {
    fn from(b: ExecBody) -> Self {
        proto::ExecCall {
            namespace: b.namespace,
            pod: b.pod,
            container: b.container,
            command: b.command,
            namespaces: b.namespaces.unwrap_or_default(),
            timeout: b.timeout,
        }
    }
}

impl From<proto::ExecCall> for ExecBody {
    fn from(b: proto::ExecCall) -> Self {
        ExecBody {
            namespace: b.namespace,
            pod: b.pod,
            container: b.container,
            command: b.command,
            namespaces: (!b.namespaces.is_empty()).then_some(b.namespaces),
            timeout: b.timeout,
        }
    }
}

impl From<ExecView> for proto::ExecView {
    fn from(e: ExecView) -> Self {
        proto::ExecView {
            node: e.node,
            namespace: e.namespace,
            pod: e.pod,
            exit_code: e.exit_code,
            stdout: e.stdout,
            stderr: e.stderr,
            truncated: e.truncated,
        }
    }
}

impl From<proto::ExecView> for ExecView {
    fn from(e: proto::ExecView) -> Self {
        ExecView {
            node: e.node,
            namespace: e.namespace,
            pod: e.pod,
            exit_code: e.exit_code,
            stdout: e.stdout,
            stderr: e.stderr,
            truncated: e.truncated,
        }
    }
}

impl From<&crate::api::CaptureSettings> for proto::CaptureSettings {
    fn from(c: &crate::api::CaptureSettings) -> Self {
        proto::CaptureSettings {
            headers: c.headers,
            body: c.body,
            redact_header: c.redact_header.clone(),
        }
    }
}

impl From<proto::CaptureSettings> for crate::api::CaptureSettings {
    fn from(c: proto::CaptureSettings) -> Self {
        crate::api::CaptureSettings {
            headers: c.headers,
            body: c.body,
            redact_header: c.redact_header,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "uid": "u1", "name": "web-0", "namespace": "shop", "labels": {"app": "web"},
            "runtime": "containerd", "sandbox_id": "sb", "state": "ready", "ip": "10.0.0.5",
            "sandbox_pid": 42, "cgroup_path": "/kubepods/x", "cgroup_id": 7, "source": "cri",
            "containers": [{"id": "c1", "name": "nginx", "image": "nginx:1", "pid": 43,
                "cgroup_path": "/kubepods/x/c1", "cgroup_id": 8, "state": "running"}],
        }))
        .unwrap()
    }

    /// Every typed value survives the trip through its message: the JSON of
    /// the value before and after is the same.
    #[test]
    fn every_type_round_trips_through_protobuf() {
        let mut p = NodePod {
            node: "n1".into(),
            pod: pod(),
            usage: None,
        };
        for usage in [
            None,
            Some(vec![
                ContainerUsageView {
                    container: "nginx".into(),
                    cpu_percent: Some(12.5),
                    cpu_seconds: Some(3.25),
                    memory_bytes: Some(1 << 20),
                },
                ContainerUsageView {
                    container: "side".into(),
                    ..Default::default()
                },
            ]),
        ] {
            p.usage = usage;
            let back = NodePod::try_from(proto::NodePod::from(&p)).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&p).unwrap()
            );
        }
        let summary = SummaryView {
            timestamp: "2026-12-01T00:00:00Z".into(),
            kind: "summary".into(),
            duration_ns: 5,
            events: 3,
            lost: 1,
            probes: vec![SummaryProbe {
                probe: "exec".into(),
                events: 3,
                lost: 1,
                map_full: 0,
                queue_full: 0,
            }],
            emitted: Some(3),
            node: Some("n1".into()),
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "n1".to_string(),
            NodeSession {
                state: "finished".into(),
                events: 3,
                lost: 1,
                gaps: [("exec".to_string(), 2)].into_iter().collect(),
                error: Some("x".into()),
                summary: Some(summary),
            },
        );
        let s = SessionView {
            id: "ab-1".into(),
            state: "stopped".into(),
            spec: CreateSession {
                namespace: Some("shop".into()),
                pod: Some("web-*".into()),
                probes: vec!["exec".into(), "tp:sched:sched_process_fork".into()],
                duration: Some("5s".into()),
                syscalls: Some(SyscallsHook {
                    syscall: vec!["openat".into()],
                    errors_only: true,
                    summary: false,
                    interval: None,
                }),
                ..Default::default()
            }
            .validate()
            .unwrap(),
            created_at: "t0".into(),
            started_at: Some("t1".into()),
            stopped_at: None,
            stop_reason: Some("duration".into()),
            run: 1,
            events: 3,
            lost: 1,
            gaps: 2,
            nodes,
            resumed: true,
        };
        let back = SessionView::from(proto::SessionView::from(&s));
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&s).unwrap()
        );
        let mut s = s;
        s.spec = CreateSession {
            probes: vec!["http".into()],
            capture: Some(crate::api::CaptureSettings {
                headers: true,
                body: Some(256),
                redact_header: vec!["x-tenant".into()],
            }),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let back = SessionView::from(proto::SessionView::from(&s));
        assert_eq!(back.spec, s.spec);
        let c = CreateSession::from(proto::CreateSessionRequest::from(CreateSession {
            probes: vec!["http".into()],
            capture: s.spec.capture.clone(),
            ..Default::default()
        }));
        assert_eq!(c.capture, s.spec.capture);
        let e = ExecBody {
            namespace: Some("shop".into()),
            pod: "web-0".into(),
            container: None,
            command: vec!["ip".into(), "addr".into()],
            namespaces: Some(vec!["net".into()]),
            timeout: Some("5s".into()),
        };
        assert_eq!(ExecBody::from(proto::ExecCall::from(e.clone())), e);
        let mut bad = proto::Pod::from(&pod());
        bad.state = "sleepy".into();
        assert_eq!(
            Pod::try_from(bad).unwrap_err(),
            "pod state 'sleepy' is not one the API knows"
        );
    }
}
