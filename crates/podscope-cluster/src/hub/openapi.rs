//! The OpenAPI document the hub serves at `/openapi.json`, generated from
//! the same types the handlers read and write (their JSON Schemas come from
//! schemars), with every operation's error answers, so the document cannot
//! drift from the API. A test checks live answers against it.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

use crate::api::{
    CreateSession, Deleted, ErrorBody, ExecBody, ExecView, HookView, NodePod, NodeView, PodQuery,
    ProbeView, SessionQuery, SessionView, UpdateSession,
};

/// One REST operation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    /// Query parameters: the properties of this type's schema.
    query: Option<Value>,
    /// The JSON body's schema.
    body: Option<Value>,
    /// The success status and its body's schema (None: no JSON body).
    ok: (u16, Option<Value>),
    /// Error statuses this operation answers, each with the Error body.
    errors: &'static [u16],
    /// Without the bearer token.
    public: bool,
    /// The success answer's media type.
    media: &'static str,
}

/// Error statuses every authenticated operation can answer.
const AUTH: u16 = 401;

fn error_words(status: u16) -> &'static str {
    match status {
        400 => "the request is wrong: a bad field, query parameter or JSON body (the message says which and what would be right)",
        401 => "no or the wrong bearer token",
        403 => "not allowed (exec disabled on the hub or on the node)",
        404 => "no such session, or nothing matches the selection",
        409 => "the session is not in a state for this (still stopping, or stopped)",
        413 => "the request body is larger than 2 MiB",
        415 => "the body is not JSON (send Content-Type: application/json)",
        502 => "the node's agent disconnected",
        504 => "the node's agent did not answer in time",
        _ => "error",
    }
}

/// The document.
pub(super) fn document() -> Value {
    let settings = SchemaSettings::openapi3().for_serialize();
    let mut out_gen = SchemaGenerator::new(settings);
    let in_settings = SchemaSettings::openapi3().for_deserialize();
    let mut in_gen = SchemaGenerator::new(in_settings);
    let nodes = out_gen.subschema_for::<Vec<NodeView>>().to_value();
    let pods = out_gen.subschema_for::<Vec<NodePod>>().to_value();
    let probes = out_gen.subschema_for::<Vec<ProbeView>>().to_value();
    let hooks = out_gen.subschema_for::<Vec<HookView>>().to_value();
    let session = out_gen.subschema_for::<SessionView>().to_value();
    let sessions = out_gen.subschema_for::<Vec<SessionView>>().to_value();
    let deleted = out_gen.subschema_for::<Deleted>().to_value();
    let exec_view = out_gen.subschema_for::<ExecView>().to_value();
    let error = out_gen.subschema_for::<ErrorBody>().to_value();
    let create = in_gen.subschema_for::<CreateSession>().to_value();
    let update = in_gen.subschema_for::<UpdateSession>().to_value();
    let exec_body = in_gen.subschema_for::<ExecBody>().to_value();
    let pod_query = in_gen.root_schema_for::<PodQuery>().to_value();
    let session_query = in_gen.root_schema_for::<SessionQuery>().to_value();
    use super::compat::{CtCreate, CtHooks, CtRun, CtSession, Empty};
    let ct_hooks = out_gen
        .subschema_for::<Vec<std::collections::BTreeMap<String, CtHooks>>>()
        .to_value();
    let ct_sessions = out_gen
        .subschema_for::<std::collections::BTreeMap<String, CtSession>>()
        .to_value();
    let ct_empty = out_gen.subschema_for::<Empty>().to_value();
    let ct_create = in_gen.subschema_for::<CtCreate>().to_value();
    let ct_run = in_gen.subschema_for::<CtRun>().to_value();

    let ops = [
        Op {
            method: "get",
            path: "/healthz",
            summary: "liveness",
            query: None,
            body: None,
            ok: (200, None),
            errors: &[],
            public: true,
            media: "text/plain",
        },
        Op {
            method: "get",
            path: "/readyz",
            summary: "readiness",
            query: None,
            body: None,
            ok: (200, None),
            errors: &[],
            public: true,
            media: "text/plain",
        },
        Op {
            method: "get",
            path: "/openapi.json",
            summary: "this document",
            query: None,
            body: None,
            ok: (200, Some(json!({"type": "object"}))),
            errors: &[AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/nodes",
            summary: "agents: node, state (up/down), kernel, probes, pods, last_seen",
            query: None,
            body: None,
            ok: (200, Some(nodes)),
            errors: &[AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/pods",
            summary: "pods of every node, each with its node; no filter lists every namespace",
            query: Some(pod_query),
            body: None,
            ok: (200, Some(pods)),
            errors: &[400, AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/probes",
            summary: "probes and the nodes that support them",
            query: None,
            body: None,
            ok: (200, Some(probes)),
            errors: &[AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/hooks",
            summary: "the hook kinds a session can use (syscalls, tracepoint and every probe) with their arguments, as `podscope hooks` prints them",
            query: None,
            body: None,
            ok: (200, Some(hooks)),
            errors: &[AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "post",
            path: "/v1/sessions",
            summary: "create a session (started unless start=false)",
            query: None,
            body: Some(create),
            ok: (201, Some(session.clone())),
            errors: &[400, AUTH, 404, 413, 415],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/sessions",
            summary: "list sessions; pod/container/namespace are globs matched against each session's own patterns",
            query: Some(session_query.clone()),
            body: None,
            ok: (200, Some(sessions)),
            errors: &[400, AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "delete",
            path: "/v1/sessions",
            summary: "delete every session (or those matching the same filters as GET)",
            query: Some(session_query),
            body: None,
            ok: (200, Some(deleted.clone())),
            errors: &[400, AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/sessions/{id}",
            summary: "one session with its per-node state and counts",
            query: None,
            body: None,
            ok: (200, Some(session.clone())),
            errors: &[AUTH, 404],
            public: false,
            media: "application/json",
        },
        Op {
            method: "put",
            path: "/v1/sessions/{id}",
            summary: "start (running) or stop (stopped) a session",
            query: None,
            body: Some(update),
            ok: (200, Some(session)),
            errors: &[400, AUTH, 404, 409, 413, 415],
            public: false,
            media: "application/json",
        },
        Op {
            method: "delete",
            path: "/v1/sessions/{id}",
            summary: "stop and delete a session",
            query: None,
            body: None,
            ok: (200, Some(deleted)),
            errors: &[AUTH, 404],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/sessions/{id}/events",
            summary: "the session's records as NDJSON (or SSE with Accept: text/event-stream): events and lost/gap/summary records (docs/json-schema.md), and the stream's own session/end/node_lost/node_resumed/reconnect/error records (docs/cluster.md); ?keepalive=SECONDS sends an empty line after that much silence",
            query: Some(json!({"properties": {"keepalive": {"type": "integer", "minimum": 1, "maximum": 300,
                "description": "seconds of silence after which the stream sends an empty line"}}})),
            body: None,
            ok: (200, None),
            errors: &[400, AUTH, 404, 409],
            public: false,
            media: "application/x-ndjson",
        },
        Op {
            method: "post",
            path: "/v1/exec",
            summary: "run a host tool in one pod's namespaces on its node (needs --enable-exec on the hub and the agent); answers when the tool ends",
            query: None,
            body: Some(exec_body),
            ok: (200, Some(exec_view)),
            errors: &[400, AUTH, 403, 404, 413, 415, 502, 504],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/trace-hooks",
            summary: "container-tracer's hook list: trace_syscalls, trace_tracepoint and trace_PROBE for every probe, with their arguments in its syntax",
            query: None,
            body: None,
            ok: (200, Some(ct_hooks)),
            errors: &[AUTH],
            public: false,
            media: "application/json",
        },
        Op {
            method: "post",
            path: "/v1/trace-session",
            summary: "container-tracer's session create (pod and container globs over every namespace, trace-hook, trace-arguments such as '-s openat -t 5000'); created stopped; a podscope session",
            query: None,
            body: Some(ct_create),
            ok: (200, Some(ct_sessions.clone())),
            errors: &[400, AUTH, 404, 413, 415],
            public: false,
            media: "application/json",
        },
        Op {
            method: "get",
            path: "/v1/trace-session/{id}",
            summary: "container-tracer's session description; id 'all' for every session",
            query: None,
            body: None,
            ok: (200, Some(ct_sessions)),
            errors: &[AUTH, 404],
            public: false,
            media: "application/json",
        },
        Op {
            method: "put",
            path: "/v1/trace-session/{id}",
            summary: "container-tracer's run/stop: {\"Run\": true|false}",
            query: None,
            body: Some(ct_run),
            ok: (200, Some(ct_empty.clone())),
            errors: &[400, AUTH, 404, 409, 413, 415],
            public: false,
            media: "application/json",
        },
        Op {
            method: "delete",
            path: "/v1/trace-session/{id}",
            summary: "container-tracer's delete (stops it first); id 'all' for every session",
            query: None,
            body: None,
            ok: (200, Some(ct_empty)),
            errors: &[AUTH, 404],
            public: false,
            media: "application/json",
        },
    ];

    let mut paths = Map::new();
    for op in &ops {
        let mut responses = Map::new();
        let mut okr = json!({"description": "success"});
        if let Some(schema) = &op.ok.1 {
            okr["content"] = json!({ op.media: { "schema": schema } });
        } else {
            okr["content"] = json!({ op.media: {} });
        }
        responses.insert(op.ok.0.to_string(), okr);
        for e in op.errors {
            responses.insert(
                e.to_string(),
                json!({"description": error_words(*e),
                       "content": {"application/json": {"schema": error}}}),
            );
        }
        let mut o = json!({"summary": op.summary, "responses": responses});
        if op.public {
            o["security"] = json!([]);
        }
        let mut params = Vec::new();
        if op.path.contains("{id}") {
            params.push(json!({"name": "id", "in": "path", "required": true,
                "schema": {"type": "string"}, "description": "session id"}));
        }
        if let Some(q) = &op.query {
            for (name, schema) in q["properties"].as_object().into_iter().flatten() {
                let mut schema = schema.clone();
                let description = schema
                    .as_object_mut()
                    .and_then(|m| m.remove("description"))
                    .unwrap_or(Value::Null);
                params.push(json!({"name": name, "in": "query", "required": false,
                    "schema": schema, "description": description}));
            }
        }
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        if let Some(b) = &op.body {
            o["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": b}}});
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    let mut schemas = Map::new();
    schemas.extend(out_gen.take_definitions(true));
    schemas.extend(in_gen.take_definitions(true));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "podscope hub",
            "version": "1",
            "description": "Cluster trace sessions. Every path except /healthz and /readyz needs 'Authorization: Bearer TOKEN'. The same operations are served over gRPC (service podscope.cluster.v1.HubApi, crates/podscope-cluster/proto/cluster.proto) with the same fields and error words. See docs/cluster.md."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document points at a schema it has, and every
    /// operation documents its errors with the Error schema.
    #[test]
    fn the_document_is_whole() {
        let d = document();
        let text = d.to_string();
        let schemas = d["components"]["schemas"].as_object().unwrap();
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("a $ref outside components: {target}"));
            assert!(schemas.contains_key(name), "no schema {name}");
        }
        for name in [
            "SessionView",
            "NodePod",
            "Container",
            "ErrorBody",
            "CreateSession",
        ] {
            assert!(schemas.contains_key(name), "{name}: {:?}", schemas.keys());
        }
        let get = &d["paths"]["/v1/sessions/{id}"]["get"]["responses"];
        assert!(get["404"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("ErrorBody"));
        assert!(get["401"].is_object());
        let put = &d["paths"]["/v1/sessions/{id}"]["put"]["responses"];
        for s in ["400", "404", "409"] {
            assert!(put[s].is_object(), "PUT {s}");
        }
        let params = d["paths"]["/v1/pods"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let mut names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "all_namespaces",
                "container",
                "namespace",
                "node",
                "pod",
                "selector",
                "usage"
            ]
        );
    }
}
