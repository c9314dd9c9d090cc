//! The web view at `/ui/`: pages served by the hub itself (assets embedded
//! at build time, nothing fetched at run time), a login with the hub's
//! token that gives an HttpOnly SameSite=Strict session cookie, and the
//! same REST operations as `/v1` under `/ui/api/v1` with that cookie
//! instead of the bearer token. Everything lives under `/ui/` and every
//! URL the pages use is relative, so the view works behind the Kubernetes
//! API server's service proxy too.
//!
//! CSRF: state changes (any method but GET/HEAD) with the cookie also need
//! the `X-CSRF-Token` header the page was given in a `<meta>` tag; a form
//! or script on another origin can neither read it nor (SameSite=Strict)
//! send the cookie. Pages are served with a Content-Security-Policy that
//! allows only the embedded script, and the script builds the DOM with
//! text nodes only: event data is never parsed as HTML.
//!
//! Live data (per-pod counts and the service map) comes from one observer
//! session (probes exec, tcp, http on every pod) that the hub starts when
//! the view is first used and deletes after [`IDLE`] without a page open.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use podscope_model::Event;

use super::Hub;
use crate::api::{CreateSession, PodQuery};

mod live;
mod traces;
pub(crate) use live::{End, Live};
use traces::Traces;

/// The cookie that holds a login.
const COOKIE: &str = "podscope_ui";
/// The header state changes carry the page's CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";
/// A login lasts this long.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The observer session is deleted after this long without a page asking.
pub(crate) const IDLE: Duration = Duration::from_secs(300);
/// The probes of the observer session unless `--ui-probes` says otherwise.
pub const DEFAULT_UI_PROBES: &str = "exec,tcp,http,dns";

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Login {
    csrf: String,
    at: Instant,
}

#[derive(Default)]
struct Observer {
    session: Option<String>,
    last_use: Option<Instant>,
    /// Pod addresses -> (namespace, pod), refreshed at most once a second.
    ips: Arc<HashMap<String, (String, String)>>,
    ips_at: Option<Instant>,
    error: Option<String>,
}

/// The web view's state in the hub.
pub(crate) struct UiState {
    logins: Mutex<HashMap<String, Login>>,
    live: Mutex<Live>,
    traces: Mutex<Traces>,
    observer: Mutex<Observer>,
    /// The observer session's probes (`--ui-probes`).
    probes: Vec<String>,
}

impl UiState {
    pub(crate) fn new(probes: &str) -> UiState {
        UiState {
            logins: Mutex::default(),
            live: Mutex::default(),
            traces: Mutex::default(),
            observer: Mutex::default(),
            probes: probes
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A token for `podscope ui` when none is given.
pub(crate) fn random_token() -> String {
    random_hex()
}

/// 32 random bytes as hex, from the kernel's generator.
fn random_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    // /dev/urandom never blocks and is always there on Linux.
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Percent-decoding of one `application/x-www-form-urlencoded` value.
fn form_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| form_decode(v))
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn json_err(status: StatusCode, msg: &str) -> Response {
    super::rest::err(status, msg)
}

impl Hub {
    /// The login behind a request's cookie: its CSRF token.
    fn login_of(&self, headers: &HeaderMap) -> Option<String> {
        let sid = cookie_of(headers)?;
        let mut logins = lock(&self.ui.logins);
        logins.retain(|_, l| l.at.elapsed() < LOGIN_TTL);
        logins.get(&sid).map(|l| l.csrf.clone())
    }

    /// A fresh login: its session id.
    fn add_login(&self) -> String {
        let sid = random_hex();
        lock(&self.ui.logins).insert(
            sid.clone(),
            Login {
                csrf: random_hex(),
                at: Instant::now(),
            },
        );
        sid
    }

    fn new_login(&self) -> Response {
        let sid = self.add_login();
        let cookie = format!(
            "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Max-Age={}",
            LOGIN_TTL.as_secs()
        );
        let mut r = redirect("./");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r
    }

    /// Marks the view as in use and starts the observer session if none runs.
    fn touch_observer(&self) {
        let mut o = lock(&self.ui.observer);
        o.last_use = Some(Instant::now());
        if let Some(id) = &o.session {
            if self.get_session(id).is_ok_and(|s| s.state == "running") {
                return;
            }
            o.session = None;
        }
        let mut req = CreateSession {
            all_namespaces: true,
            probes: self.ui.probes.clone(),
            start: Some(true),
            wait: Some(true),
            ..CreateSession::default()
        };
        let view = match self.create_session(req.clone()) {
            Ok(v) => v,
            Err(e) => {
                // A hub whose nodes lack the http probe: the map then has
                // connections only.
                req.probes.retain(|p| p != "http");
                match self.create_session(req) {
                    Ok(v) => v,
                    Err(e2) => {
                        o.error = Some(format!("{}; {}", e.message, e2.message));
                        return;
                    }
                }
            }
        };
        let sub = match self.subscribe(&view.id) {
            Ok(s) => s,
            Err(e) => {
                o.error = Some(e.message);
                return;
            }
        };
        eprintln!(
            "podscope hub: web view in use: observer session {} (probes {}) feeds its live counts and service map",
            view.id,
            view.spec.probes.join(",")
        );
        o.session = Some(view.id.clone());
        o.error = None;
        let hub = self.clone();
        tokio::spawn(async move { hub.observe(view.id, sub).await });
    }

    async fn observe(self, id: String, mut sub: super::service::Subscription) {
        use std::sync::atomic::Ordering;
        // The span builder decides spans when their hold runs out.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                batch = sub.rx.recv() => {
                    let Some(batch) = batch else { break };
                    let _ = sub.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                        Some(q.saturating_sub(batch.len()))
                    });
                    let ips = self.pod_ips();
                    let pod_of = |ip: &str| ips.get(ip).cloned();
                    let now = now_ns();
                    let mut live = lock(&self.ui.live);
                    let mut traces = lock(&self.ui.traces);
                    for line in &batch {
                        // Events are taken as they came, typed; the few
                        // control records through their JSON.
                        if let Some(crate::proto::record::Kind::Event(e)) = &line.rec.kind {
                            match Event::try_from(e.clone()) {
                                Ok(ev) => {
                                    live.ingest(&ev, &pod_of);
                                    traces.ingest(&ev, now);
                                }
                                Err(_) => live.unreadable += 1,
                            }
                        } else {
                            live.control(&crate::records::to_value(&line.rec));
                        }
                    }
                }
                _ = tick.tick() => {
                    lock(&self.ui.traces).tick(now_ns());
                    let idle = lock(&self.ui.observer).last_use.is_none_or(|t| t.elapsed() > IDLE);
                    if idle {
                        eprintln!("podscope hub: web view idle for {}s: observer session {id} deleted", IDLE.as_secs());
                        let _ = self.delete_session(&id);
                        break;
                    }
                }
            }
        }
        let mut o = lock(&self.ui.observer);
        if o.session.as_deref() == Some(id.as_str()) {
            o.session = None;
        }
    }

    /// Every pod address the nodes report, to name the peers of connections.
    fn pod_ips(&self) -> Arc<HashMap<String, (String, String)>> {
        let mut o = lock(&self.ui.observer);
        if o.ips_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            let st = self.lock();
            o.ips = Arc::new(
                st.nodes
                    .values()
                    .flat_map(|n| n.pods.iter())
                    .filter_map(|p| {
                        p.ip.clone()
                            .map(|ip| (ip, (p.namespace.clone(), p.name.clone())))
                    })
                    .collect(),
            );
            o.ips_at = Some(Instant::now());
        }
        o.ips.clone()
    }

    /// The live snapshot the pages show: nodes, pods with their counts, the
    /// map, the observer's state.
    fn snapshot(&self) -> Snapshot {
        let nodes = self.list_nodes();
        let pods = self
            .list_pods(PodQuery {
                all_namespaces: true,
                ..PodQuery::default()
            })
            .unwrap_or_default();
        // A pod's usage is its containers' summed.
        let usage: BTreeMap<(String, String), super::PodUsage> = {
            let st = self.lock();
            let mut sums: BTreeMap<(String, String), super::PodUsage> = BTreeMap::new();
            for ((ns, pod, _), u) in st.nodes.values().filter(|n| n.up).flat_map(|n| &n.usage) {
                let e = sums.entry((ns.clone(), pod.clone())).or_default();
                e.cpu_percent = match (e.cpu_percent, u.cpu_percent) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                };
                e.memory_bytes = match (e.memory_bytes, u.memory_bytes) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                };
            }
            sums
        };
        let live = lock(&self.ui.live);
        let keys: Vec<(String, String)> = pods
            .iter()
            .map(|p| (p.pod.namespace.clone(), p.pod.name.clone()))
            .collect();
        let map = live.map(&keys);
        let o = lock(&self.ui.observer);
        Snapshot {
            at_ms: super::unix_ms(std::time::SystemTime::now()),
            observer: ObserverView {
                session: o.session.clone(),
                error: o.error.clone(),
                records: live.records,
                lost: live.lost,
                gaps: live.gaps,
                unreadable: live.unreadable,
            },
            nodes: nodes
                .into_iter()
                .map(|n| NodeRow {
                    node: n.node,
                    state: n.state,
                    kernel: n.kernel,
                    pods: n.pods,
                })
                .collect(),
            pods: pods
                .iter()
                .map(|p| PodRow {
                    cpu_percent: usage
                        .get(&(p.pod.namespace.clone(), p.pod.name.clone()))
                        .and_then(|u| u.cpu_percent),
                    memory_bytes: usage
                        .get(&(p.pod.namespace.clone(), p.pod.name.clone()))
                        .and_then(|u| u.memory_bytes),
                    node: p.node.clone(),
                    namespace: p.pod.namespace.clone(),
                    pod: p.pod.name.clone(),
                    ip: p.pod.ip.clone(),
                    containers: p.pod.containers.iter().map(|c| c.name.clone()).collect(),
                    counts: live.pod(&p.pod.namespace, &p.pod.name),
                })
                .collect(),
            map,
        }
    }
}

#[derive(Serialize)]
struct ObserverView {
    session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    records: u64,
    lost: u64,
    gaps: u64,
    /// Event records the hub could not read (counted, not shown).
    unreadable: u64,
}

#[derive(Serialize)]
struct NodeRow {
    node: String,
    state: String,
    kernel: String,
    pods: usize,
}

#[derive(Serialize)]
struct PodRow {
    node: String,
    namespace: String,
    pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    containers: Vec<String>,
    /// CPU used over the node's last report period, % of one CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_percent: Option<f64>,
    /// Memory working set of its containers, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    #[serde(flatten)]
    counts: live::PodCounts,
}

#[derive(Serialize)]
struct Snapshot {
    at_ms: u64,
    observer: ObserverView,
    nodes: Vec<NodeRow>,
    pods: Vec<PodRow>,
    map: live::MapView,
}

/// The routes under `/ui`.
pub(super) fn routes(hub: &Hub) -> Router<Hub> {
    let api = super::rest::api_routes()
        .route("/live", get(live_stream))
        .route("/snapshot", get(snapshot))
        .route("/map", get(map))
        .route("/edge", get(edge))
        .route("/traces", get(trace_list))
        .route("/traces/{id}", get(trace_one))
        .route("/logout", post(logout))
        .layer(middleware::from_fn_with_state(hub.clone(), require_login));
    Router::new()
        .route("/ui", get(|| async { redirect("ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/app.js", get(app_js))
        .route("/ui/app.css", get(app_css))
        .nest("/ui/api", api)
}

async fn require_login(State(hub): State<Hub>, req: Request, next: Next) -> Response {
    let Some(csrf) = hub.login_of(req.headers()) else {
        return json_err(
            StatusCode::UNAUTHORIZED,
            "not logged in: open /ui/login and give the hub's token",
        );
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe {
        let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let ok = given.is_some_and(|g| {
            g.len() == csrf.len()
                && g.bytes()
                    .zip(csrf.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0
        });
        if !ok {
            return json_err(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header: state changes from the web view carry the token of its page",
            );
        }
    }
    hub.touch_observer();
    next.run(req).await
}

async fn index(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    match hub.login_of(&headers) {
        Some(csrf) => {
            hub.touch_observer();
            html(StatusCode::OK, INDEX.replace("{{csrf}}", &csrf))
        }
        None => redirect("login"),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn login_form(error: &str) -> String {
    // The message is one of ours, never input; escaped anyway.
    LOGIN.replace("{{error}}", &escape_html(error))
}

/// `GET /ui/login`, or `GET /ui/login?token=...` (the link `podscope ui`
/// prints): a right token logs in at once.
async fn login_page(
    State(hub): State<Hub>,
    q: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    match q.ok().and_then(|Query(q)| q.token) {
        Some(t) if crate::auth::bearer_ok(Some(&format!("Bearer {t}")), &hub.token) => {
            hub.new_login()
        }
        Some(_) => html(
            StatusCode::UNAUTHORIZED,
            login_form("That token is not the hub's token."),
        ),
        None => html(StatusCode::OK, login_form("")),
    }
}

async fn login(State(hub): State<Hub>, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body);
    let token = form_field(&body, "token").unwrap_or_default();
    if crate::auth::bearer_ok(Some(&format!("Bearer {}", token.trim())), &hub.token) {
        hub.new_login()
    } else {
        html(
            StatusCode::UNAUTHORIZED,
            login_form("Wrong token: give the hub's token (its --token-file, or PODSCOPE_TOKEN)."),
        )
    }
}

async fn logout(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie_of(&headers) {
        lock(&hub.ui.logins).remove(&sid);
    }
    let mut r = Json(serde_json::json!({"logged_out": true})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("podscope_ui=; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        APP_CSS,
    )
        .into_response()
}

async fn snapshot(State(hub): State<Hub>) -> Response {
    Json(hub.snapshot()).into_response()
}

/// `GET /ui/api/map`: the service map alone.
async fn map(State(hub): State<Hub>) -> Response {
    let pods: Vec<(String, String)> = hub
        .list_pods(PodQuery {
            all_namespaces: true,
            ..PodQuery::default()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.pod.namespace, p.pod.name))
        .collect();
    let m = lock(&hub.ui.live).map(&pods);
    Json(m).into_response()
}

#[derive(Deserialize)]
struct EdgeQuery {
    source: String,
    target: String,
}

/// `GET /ui/api/edge?source=ID&target=ID`: an edge's recent requests.
async fn edge(State(hub): State<Hub>, q: Result<Query<EdgeQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = q else {
        return json_err(
            StatusCode::BAD_REQUEST,
            "give source=ID&target=ID of an edge of GET /ui/api/map",
        );
    };
    match lock(&hub.ui.live).recent(&q.source, &q.target) {
        Some(r) => Json(r).into_response(),
        None => json_err(
            StatusCode::NOT_FOUND,
            &format!("no edge {} -> {} on the map", q.source, q.target),
        ),
    }
}

/// `GET /ui/api/traces`: the traces kept, newest first.
async fn trace_list(State(hub): State<Hub>) -> Response {
    Json(lock(&hub.ui.traces).list()).into_response()
}

/// `GET /ui/api/traces/{id}`: one trace's spans, by start.
async fn trace_one(State(hub): State<Hub>, Path(id): Path<String>) -> Response {
    match lock(&hub.ui.traces).get(&id) {
        Some(t) => Json(t).into_response(),
        None => json_err(
            StatusCode::NOT_FOUND,
            &format!(
                "no trace {id}: the view keeps the last {} traces (GET /ui/api/traces lists them)",
                traces::MAX_TRACES
            ),
        ),
    }
}

/// `GET /ui/api/live`: the snapshot every 2 s as Server-Sent Events.
async fn live_stream(State(hub): State<Hub>) -> Response {
    let s = futures_util::stream::unfold(
        (hub, tokio::time::interval(Duration::from_secs(2))),
        |(hub, mut tick)| async move {
            tick.tick().await;
            hub.touch_observer();
            let data = serde_json::to_string(&hub.snapshot()).unwrap_or_default();
            Some((
                Ok::<_, Infallible>(SseEvent::default().event("snapshot").data(data)),
                (hub, tick),
            ))
        },
    );
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// Text made safe to put in HTML.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A hub whose service map holds `pods` pods and `edges` edges between
/// them (synthetic), serving on 127.0.0.1: for the benchmark of
/// `GET /ui/api/map`. Returns the address, a logged-in cookie, and the
/// runtime that serves it (dropping it stops the hub).
#[doc(hidden)]
pub fn bench_map_server(
    pods: usize,
    edges: usize,
) -> anyhow::Result<(std::net::SocketAddr, String, tokio::runtime::Runtime)> {
    let hub = Hub::new(random_hex(), false, 1024, DEFAULT_UI_PROBES);
    {
        let mut live = lock(&hub.ui.live);
        let keys: Vec<(String, String)> = (0..pods.max(1))
            .map(|i| (format!("ns-{}", i % 10), format!("pod-{i}")))
            .collect();
        let end = |k: &(String, String)| End::Pod {
            namespace: k.0.clone(),
            pod: k.1.clone(),
        };
        let n = keys.len();
        for i in 0..edges {
            // Distinct pairs: each round of n edges shifts the targets by one.
            let a = &keys[i % n];
            let b = &keys[(i % n * 7 + 1 + i / n) % n];
            live.add_synthetic(end(a), end(b), 20, 1_000_000);
        }
    }
    let sid = hub.add_login();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = hub.router();
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, format!("{COOKIE}={sid}"), rt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_cookies() {
        assert_eq!(form_decode("a%2Bb+c%3D"), "a+b c=");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(
            form_field("x=1&token=s%3Cx", "token").as_deref(),
            Some("s<x")
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; podscope_ui=abc"),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some("abc"));
        assert_eq!(
            escape_html("<script>&\"'"),
            "&lt;script&gt;&amp;&quot;&#39;"
        );
    }
}
