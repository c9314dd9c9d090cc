//! The REST front end (axum): each handler reads its path, query and JSON
//! body, calls the hub's operation of the same name (`service.rs`) and
//! writes its typed answer as JSON, or its error as `{"error": ...}` with
//! the error kind's status. The middleware keeps every answer, axum's own
//! included, in that shape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::Hub;
use crate::api::{
    ApiError, CreateSession, ErrorBody, ExecBody, PodQuery, SessionQuery, UpdateSession,
};

/// The REST routes, behind the token and JSON-body checks.
pub(super) fn routes(hub: &Hub) -> Router<Hub> {
    api_routes().layer(middleware::from_fn_with_state(hub.clone(), require_token))
}

/// The REST operations without their authentication: `/v1` with the
/// bearer token here, and the web view's `/ui/api/v1` with its login.
pub(super) fn api_routes() -> Router<Hub> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/nodes", get(nodes))
        .route("/v1/pods", get(pods))
        .route("/v1/probes", get(probes))
        .route("/v1/hooks", get(hooks))
        .route("/v1/sessions", post(create).get(list).delete(delete_all))
        .route(
            "/v1/sessions/{id}",
            get(get_one).put(update).delete(delete_one),
        )
        .route("/v1/sessions/{id}/events", get(events))
        .route("/v1/exec", post(exec))
        // container-tracer's surface (compat.rs).
        .route("/v1/trace-hooks", get(ct_hooks))
        .route("/v1/trace-session", post(ct_create))
        .route(
            "/v1/trace-session/{id}",
            get(ct_get).put(ct_run).delete(ct_delete),
        )
        .layer(middleware::from_fn(require_json_body))
}

pub(super) fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

/// An operation's error as its REST answer.
fn api_err(e: ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    err(status, e.message)
}

/// An operation's answer as JSON with `status`, or its error.
fn answer<T: Serialize>(status: StatusCode, r: Result<T, ApiError>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => api_err(e),
    }
}

/// A JSON body as `T`, or the 400 that says what was expected.
fn body<T: serde::de::DeserializeOwned>(
    b: &[u8],
    what: &str,
    example: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::bad_request(format!("malformed {what}: {e}; expected {example}")))
}

/// A query as `T`, or the 400 that names the parameters there are.
fn query<T>(q: Result<Query<T>, QueryRejection>, allowed: &str) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query ({e}); allowed are {allowed}")))
}

const POD_PARAMS: &str =
    "pod, namespace, all_namespaces=true, selector, container, node, usage=true";
const SESSION_PARAMS: &str = "pod, container, namespace (globs) and state";

async fn require_token(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let ok = [header::AUTHORIZATION.as_str(), crate::auth::PROXY_HEADER]
        .iter()
        .any(|name| {
            let given = req.headers().get(*name).and_then(|v| v.to_str().ok());
            crate::auth::bearer_ok(given, &hub.token)
        });
    if !ok {
        let mut r = err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return r;
    }
    next.run(req).await
}

/// The largest request body the REST API reads (axum's default limit).
const MAX_BODY: usize = 2 << 20;

pub(super) async fn no_such_path(req: Request) -> Response {
    err(
        StatusCode::NOT_FOUND,
        format!(
            "no such path: {} {}; the API is under /v1 (GET /openapi.json lists every path)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A request body that is not JSON is refused (415) before a handler
/// parses it: the API only reads JSON. A body without a Content-Type is
/// read as JSON (simple clients), one that says otherwise is not.
async fn require_json_body(req: Request, next: Next) -> Response {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
    let has_body = matches!(req.method().as_str(), "POST" | "PUT" | "PATCH");
    if let Some(ct) = ct.filter(|_| has_body) {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "{} {} takes a JSON body: send 'Content-Type: application/json', not '{ct}'",
                    req.method(),
                    req.uri().path()
                ),
            );
        }
    }
    next.run(req).await
}

/// The methods a REST path takes, for a 405 (axum does not say).
fn allowed_methods(path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["v1", "sessions"] => "GET, POST, DELETE",
        ["v1", "sessions", _] => "GET, PUT, DELETE",
        ["v1", "exec"] => "POST",
        ["v1", "trace-session"] => "POST",
        ["v1", "trace-session", _] => "GET, PUT, DELETE",
        _ => "GET",
    }
}

/// Every REST error answer in the documented shape `{"error": "..."}`,
/// including the ones axum makes itself (405 for a method a path does not
/// take, 413 for a body over the limit, its extractors' rejections). gRPC
/// answers are left alone.
pub(super) async fn json_errors(req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    let status = r.status();
    // JSON answers and the web view's pages are left as they are.
    let json = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
    if grpc || json || !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let msg = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = allowed_methods(&path);
            if let Ok(v) = header::HeaderValue::from_str(allow) {
                parts.headers.insert(header::ALLOW, v);
            }
            format!("{method} is not allowed on {path}; it takes {allow}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body of {method} {path} is too large: at most {} MiB",
            MAX_BODY >> 20
        ),
        _ if text.is_empty() => format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("error")
        ),
        _ => text,
    };
    let body = serde_json::to_vec(&ErrorBody { error: msg }).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

async fn ct_hooks() -> Response {
    Json(super::compat::hooks()).into_response()
}

async fn ct_create(State(hub): State<Hub>, b: Bytes) -> Response {
    let example = r#"e.g. {"pod":"web-*","container":"*","trace-hook":"trace_syscalls","trace-arguments":"-s openat -t 5000"}"#;
    match body::<super::compat::CtCreate>(&b, "trace session", example) {
        Ok(req) => answer(StatusCode::OK, hub.ct_create(&req)),
        Err(e) => api_err(e),
    }
}

async fn ct_get(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, hub.ct_get(&id))
}

async fn ct_run(State(hub): State<Hub>, Path(id): Path<String>, b: Bytes) -> Response {
    match body::<super::compat::CtRun>(&b, "run request", r#"{"Run": true}"#) {
        Ok(r) => answer(StatusCode::OK, hub.ct_run(&id, &r)),
        Err(e) => api_err(e),
    }
}

async fn ct_delete(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, hub.ct_delete(&id))
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| super::openapi::document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

async fn nodes(State(hub): State<Hub>) -> Response {
    Json(hub.list_nodes()).into_response()
}

async fn pods(State(hub): State<Hub>, q: Result<Query<PodQuery>, QueryRejection>) -> Response {
    match query(q, POD_PARAMS).and_then(|q| hub.list_pods_json(q)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => api_err(e),
    }
}

async fn probes(State(hub): State<Hub>) -> Response {
    Json(hub.list_probes()).into_response()
}

async fn hooks(State(hub): State<Hub>) -> Response {
    Json(hub.list_hooks()).into_response()
}

async fn create(State(hub): State<Hub>, b: Bytes) -> Response {
    let example = r#"e.g. {"namespace":"shop","pod":"web-*","probes":["tcp"],"duration":"60s"}"#;
    match body::<CreateSession>(&b, "session request", example) {
        Ok(req) => answer(StatusCode::CREATED, hub.create_session(req)),
        Err(e) => api_err(e),
    }
}

async fn list(State(hub): State<Hub>, q: Result<Query<SessionQuery>, QueryRejection>) -> Response {
    match query(q, SESSION_PARAMS) {
        Ok(q) => Json(hub.list_sessions(&q)).into_response(),
        Err(e) => api_err(e),
    }
}

async fn delete_all(
    State(hub): State<Hub>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Response {
    match query(q, SESSION_PARAMS) {
        Ok(q) => Json(hub.delete_sessions(&q)).into_response(),
        Err(e) => api_err(e),
    }
}

async fn get_one(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, hub.get_session(&id))
}

async fn update(State(hub): State<Hub>, Path(id): Path<String>, b: Bytes) -> Response {
    let example = r#"{"state":"running"} or {"state":"stopped"}"#;
    match body::<UpdateSession>(&b, "update", example) {
        Ok(req) => answer(StatusCode::OK, hub.update_session(&id, &req)),
        Err(e) => api_err(e),
    }
}

async fn delete_one(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    answer(StatusCode::OK, hub.delete_session(&id))
}

async fn exec(State(hub): State<Hub>, b: Bytes) -> Response {
    if !hub.enable_exec {
        // Refused before the body is read, as the operation would.
        return answer::<()>(
            StatusCode::OK,
            hub.exec(ExecBody::default()).await.map(|_| ()),
        );
    }
    let example =
        r#"e.g. {"namespace":"shop","pod":"web-0","command":["ss","-tan"],"timeout":"30s"}"#;
    match body::<ExecBody>(&b, "exec request", example) {
        Ok(req) => answer(StatusCode::OK, hub.exec(req).await),
        Err(e) => api_err(e),
    }
}

/// `?keepalive=SECONDS` of the event stream: an empty line after that much
/// silence, so a client can tell a quiet session from a hub that hangs.
fn keepalive(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(q) = query else { return Ok(None) };
    let mut out = None;
    for (k, v) in q.split('&').filter_map(|kv| kv.split_once('=')) {
        if k != "keepalive" {
            return Err(format!(
                "unknown query parameter '{k}' for the event stream; it takes keepalive=SECONDS"
            ));
        }
        match v.parse::<u64>() {
            Ok(n @ 1..=300) => out = Some(Duration::from_secs(n)),
            _ => {
                return Err(format!(
                    "keepalive={v}: give the seconds of silence after which the stream sends an empty line, 1 to 300"
                ))
            }
        }
    }
    Ok(out)
}

async fn events(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let keepalive = match keepalive(query.as_deref()) {
        Ok(k) => k,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let sub = match hub.subscribe(&id) {
        Ok(s) => s,
        Err(e) => return api_err(e),
    };
    let queued = sub.queued;
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    use futures_util::StreamExt;
    let stream = UnboundedReceiverStream::new(sub.rx).map(move |batch| {
        // Every record counts against the limit while queued.
        let _ = queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            Some(q.saturating_sub(batch.len()))
        });
        batch
    });
    if sse {
        let s = stream
            .flat_map(futures_util::stream::iter)
            .map(|l| Ok::<_, std::convert::Infallible>(SseEvent::default().data(l.json())));
        Sse::new(s).keep_alive(KeepAlive::default()).into_response()
    } else {
        // One HTTP chunk per batch.
        let s = stream.map(|batch| {
            let mut b = Vec::with_capacity(batch.iter().map(|l| l.json().len() + 1).sum());
            for l in &batch {
                b.extend_from_slice(l.json().as_bytes());
                b.push(b'\n');
            }
            Bytes::from(b)
        });
        // With ?keepalive: an empty line after each quiet spell; the stream
        // still ends when the session's records do.
        let s = futures_util::stream::unfold(Box::pin(s), move |mut s| async move {
            let next = match keepalive {
                None => s.next().await,
                Some(d) => match tokio::time::timeout(d, s.next()).await {
                    Ok(next) => next,
                    Err(_) => Some(Bytes::from_static(b"\n")),
                },
            };
            next.map(|b| (Ok::<_, std::convert::Infallible>(b), s))
        });
        (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(s),
        )
            .into_response()
    }
}
