//! The CLI's gRPC transport to the hub (`--hub-api grpc`): each REST call
//! the CLI makes goes to the HubApi operation of the same meaning, and the
//! answer comes back as the REST answer would (status, JSON body, the events
//! as NDJSON lines), so the CLI's logic is the same over both APIs.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth::Bearer;
use crate::http::Response;
use crate::proto::hub_api_client::HubApiClient;
use crate::proto::{Json, Query, SessionId, SessionUpdate};
use crate::tls::ClientTls;

type Client = HubApiClient<InterceptedService<Channel, Bearer>>;

/// A connection to the hub's HubApi service.
pub(crate) struct GrpcHub {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// For the words of a failed connection.
    url: String,
    tls: Option<ClientTls>,
}

impl std::fmt::Debug for GrpcHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcHub")
    }
}

impl GrpcHub {
    /// Connects lazily: the first call reports an unreachable hub.
    pub(crate) fn new(url: &str, token: &str, tls: Option<&ClientTls>) -> Result<GrpcHub> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the gRPC client's runtime")?;
        let mut ep = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("'{url}' is not a hub URL (e.g. http://hub:7700)"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(tls) = tls {
            ep = ep
                .tls_config(tls.tonic_config())
                .context("configuring TLS for the hub")?;
        }
        let channel = {
            let _guard = rt.enter();
            ep.connect_lazy()
        };
        Ok(GrpcHub {
            url: url.to_string(),
            tls: tls.cloned(),
            rt,
            client: HubApiClient::with_interceptor(channel, Bearer::new(token)?),
        })
    }

    /// The REST call `method path` with `body`, made as its HubApi operation.
    /// Each unary call (and the stream's start) must answer within `limit`;
    /// the stream's records then stop after `stream_idle` of silence, if given
    /// (the hub sends no keep-alives over gRPC: only a deadline applies).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        limit: Duration,
        stream_idle: Option<Duration>,
    ) -> Result<Response> {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        let query = Query {
            params: parse_query(q),
        };
        let json = Json {
            json: body.unwrap_or("").to_string(),
        };
        let segs: Vec<String> = p
            .trim_start_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut c = self.client.clone();
        let id = |i: usize| SessionId {
            id: segs[i].to_string(),
        };
        let what = format!("{method} {p}");
        let got = match (method, segs.as_slice()) {
            ("GET", ["v1", "sessions", _, "events"]) => {
                let s = id(2);
                return match self.wait(&what, limit, c.stream_events(s))? {
                    Ok(stream) => Ok(Response::from_reader(
                        200,
                        Box::new(LineReader::spawn(
                            &self.rt,
                            stream.into_inner(),
                            stream_idle,
                            &what,
                        )),
                    )),
                    Err(st) => self.answer(Err(st)),
                };
            }
            ("GET", ["v1", "nodes"]) => self.wait(&what, limit, c.list_nodes(query))?,
            ("GET", ["v1", "pods"]) => self.wait(&what, limit, c.list_pods(query))?,
            ("GET", ["v1", "probes"]) => self.wait(&what, limit, c.list_probes(query))?,
            ("POST", ["v1", "sessions"]) => self.wait(&what, limit, c.create_session(json))?,
            ("GET", ["v1", "sessions"]) => self.wait(&what, limit, c.list_sessions(query))?,
            ("DELETE", ["v1", "sessions"]) => self.wait(&what, limit, c.delete_sessions(query))?,
            ("GET", ["v1", "sessions", _]) => self.wait(&what, limit, c.get_session(id(2)))?,
            ("PUT", ["v1", "sessions", _]) => self.wait(
                &what,
                limit,
                c.update_session(SessionUpdate {
                    id: segs[2].to_string(),
                    json: json.json,
                }),
            )?,
            ("DELETE", ["v1", "sessions", _]) => {
                self.wait(&what, limit, c.delete_session(id(2)))?
            }
            // The answer comes when the tool ends: the caller allows for it.
            ("POST", ["v1", "exec"]) => self.wait(&what, limit, c.exec(json))?,
            _ => bail!("the hub's gRPC API has no operation for {method} {p}"),
        };
        self.answer(got.map(|r| r.into_inner()))
    }
}

impl GrpcHub {
    /// Runs one call, or fails after `limit` naming the call: a hub that
    /// accepts and never answers must not hang the CLI.
    fn wait<T>(
        &self,
        what: &str,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<Result<T, tonic::Status>> {
        self.rt
            .block_on(async { tokio::time::timeout(limit, call).await })
            .map_err(|_| {
                anyhow::anyhow!(
                    "{what}: no answer within {}s (the server accepted the connection but did not answer; is it a podscope hub, and is it stuck?)",
                    limit.as_secs()
                )
            })
    }
}

/// A gRPC answer as the REST answer: the same status and JSON. A call that
/// never reached the hub is an error, as a failed connection is over REST.
impl GrpcHub {
    fn answer(&self, r: Result<Json, tonic::Status>) -> Result<Response> {
        answer(r, &self.url, self.tls.as_ref())
    }
}

/// An error and its sources in words, each said once: tonic, hyper and
/// rustls each repeat their source's text in their own.
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in crate::tls::chain(e) {
        let t = match e.downcast_ref::<tonic::Status>() {
            Some(st) => st.message().to_string(),
            None => e.to_string(),
        };
        let t = t.trim().to_string();
        if t.is_empty() || parts.iter().any(|p| p.contains(&t)) {
            continue;
        }
        // A later, longer text that contains an earlier one replaces it.
        parts.retain(|p| !t.contains(p.as_str()));
        parts.push(t);
    }
    parts.join(": ")
}

fn answer(r: Result<Json, tonic::Status>, url: &str, tls: Option<&ClientTls>) -> Result<Response> {
    let (status, body) = match r {
        Ok(j) => (200, j.json),
        Err(st) => {
            use std::error::Error;
            if st.code() == tonic::Code::Unavailable && st.source().is_some() {
                if let Some(m) = crate::tls::explain(crate::tls::chain(&st), url, tls) {
                    bail!("{m}");
                }
                bail!("{}", error_text(&st));
            }
            let status = match st.code() {
                tonic::Code::InvalidArgument => 400,
                tonic::Code::Unauthenticated => 401,
                tonic::Code::PermissionDenied => 403,
                tonic::Code::NotFound => 404,
                tonic::Code::FailedPrecondition => 409,
                tonic::Code::Aborted => 410,
                tonic::Code::Unavailable => 502,
                tonic::Code::DeadlineExceeded => 504,
                _ => 500,
            };
            (
                status,
                serde_json::json!({ "error": st.message() }).to_string(),
            )
        }
    };
    Ok(Response::from_reader(
        status,
        Box::new(std::io::Cursor::new(body.into_bytes())),
    ))
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Some((unpct(k)?, unpct(v)?))
        })
        .collect()
}

fn unpct(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The events stream as NDJSON bytes for the CLI's line reader.
struct LineReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    rt: tokio::runtime::Handle,
    /// Silence after which a read fails, and the call, for the message.
    idle: Option<(Duration, String)>,
}

impl LineReader {
    fn spawn(
        rt: &tokio::runtime::Runtime,
        mut s: tonic::Streaming<Json>,
        idle: Option<Duration>,
        what: &str,
    ) -> LineReader {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        rt.spawn(async move {
            while let Ok(Some(m)) = s.message().await {
                let mut line = m.json.into_bytes();
                line.push(b'\n');
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        LineReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            rt: rt.handle().clone(),
            idle: idle.map(|d| (d, what.to_string())),
        }
    }
}

impl Read for LineReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let next = match &self.idle {
                None => self.rx.blocking_recv(),
                Some((d, what)) => {
                    let (d, rx) = (*d, &mut self.rx);
                    self.rt
                        .block_on(async { tokio::time::timeout(d, rx.recv()).await })
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!(
                                    "{what}: nothing arrived for {:.1}s (idle stream, past the deadline of --duration)",
                                    d.as_secs_f64()
                                ),
                            )
                        })?
                }
            };
            match next {
                Some(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_texts_say_each_thing_once() {
        let inner = E("received corrupt message of type InvalidContentType", None);
        let mid = E(
            "transport error: received corrupt message of type InvalidContentType",
            Some(Box::new(inner)),
        );
        let st = tonic::Status::from_error(Box::new(mid));
        let t = error_text(&st);
        assert_eq!(t.matches("InvalidContentType").count(), 1, "{t}");
        let e = E("connection reset", Some(Box::new(E("broken pipe", None))));
        assert_eq!(error_text(&e), "connection reset: broken pipe");
    }

    #[test]
    fn queries_round_trip_percent_encoding() {
        let q = parse_query(
            "pod=web-%2A&namespace=shop&all_namespaces=true&selector=app%3Dweb%2Ctier+in+%28a%29",
        );
        assert_eq!(q["pod"], "web-*");
        assert_eq!(q["namespace"], "shop");
        assert_eq!(q["all_namespaces"], "true");
        assert_eq!(q["selector"], "app=web,tier in (a)");
        assert!(parse_query("").is_empty());
    }
}
