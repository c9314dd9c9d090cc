//! `kubectl podscope`: the hub reached through the Kubernetes API server's
//! service proxy with the user's kubeconfig, so no port of the hub needs to
//! be exposed outside the cluster.
//!
//! A hub URL `kube://NAMESPACE/SERVICE:PORT` (the default when the binary
//! runs as `kubectl-podscope`) starts a small forwarder on 127.0.0.1: each
//! request the CLI sends to it goes to
//! `/api/v1/namespaces/NAMESPACE/services/SERVICE:PORT/proxy/...` through a
//! kube-rs client, which does the API server's authentication (tokens,
//! client certificates, exec plugins: whatever the kubeconfig says). The rest
//! of the CLI then talks plain HTTP to the forwarder, so the hub client is the
//! same for direct and proxied hubs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Where `kubectl podscope` looks for the hub unless `--hub` says otherwise:
/// the Service that deploy/ creates.
pub const DEFAULT_HUB: &str = "kube://podscope/podscope-hub:7700";

/// The Secret (and key) that deploy/ keeps the hub's token in.
pub const TOKEN_SECRET: (&str, &str) = ("podscope-token", "token");

/// kubectl's own flags.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// --kubeconfig (else $KUBECONFIG, ~/.kube/config, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// --context (else the kubeconfig's current context).
    pub context: Option<String>,
}

/// A `kube://NAMESPACE/[https:]SERVICE:PORT` hub address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The hub's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its port, by number or name.
    pub port: String,
    /// `https:` when the hub serves TLS (the API server then dials it with TLS).
    pub https: bool,
}

impl ServiceRef {
    /// Parses a `kube://` hub URL; None for any other URL.
    pub fn parse(url: &str) -> Option<Result<ServiceRef>> {
        let rest = url.strip_prefix("kube://")?;
        Some(Self::parse_rest(rest).with_context(|| {
            format!(
                "bad hub address {url:?}: expected kube://NAMESPACE/SERVICE:PORT \
                 (e.g. {DEFAULT_HUB}; kube://NAMESPACE/https:SERVICE:PORT for a TLS hub)"
            )
        }))
    }

    fn parse_rest(rest: &str) -> Result<ServiceRef> {
        let (namespace, svc) = rest.trim_end_matches('/').split_once('/').ok_or_else(|| {
            anyhow!("no namespace: the part before '/' names the hub's namespace")
        })?;
        let (https, svc) = match svc.strip_prefix("https:") {
            Some(s) => (true, s),
            None => (false, svc),
        };
        let (name, port) = svc
            .split_once(':')
            .ok_or_else(|| anyhow!("no port: the Service name must be followed by ':PORT'"))?;
        let dns = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !dns(namespace) || !dns(name) || !dns(port) {
            bail!(
                "namespace, Service and port must be DNS labels (lowercase letters, digits, '-')"
            );
        }
        Ok(ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
            https,
        })
    }

    /// The API server path that proxies to this Service.
    pub fn proxy_path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/services/{}{}:{}/proxy",
            self.namespace,
            if self.https { "https:" } else { "" },
            self.name,
            self.port
        )
    }
}

/// A running forwarder. Dropping it stops it.
#[derive(Debug)]
pub struct KubeProxy {
    /// `http://127.0.0.1:PORT`: the hub, as the CLI should address it.
    pub url: String,
    /// The hub's token read from its Secret, when asked for.
    pub token: Option<String>,
    /// The kubeconfig context's namespace (kubectl's default for `-n`).
    pub default_namespace: String,
    _rt: tokio::runtime::Runtime,
}

/// Connects to the API server, checks that the hub's Service exists, reads
/// the token Secret when `want_token`, and starts the forwarder.
pub fn start(target: &ServiceRef, opts: &KubeOptions, want_token: bool) -> Result<KubeProxy> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the kube client's runtime")?;
    let (url, token, default_namespace) = rt.block_on(async {
        let config = config(opts).await?;
        let server = config.cluster_url.to_string();
        let default_namespace = config.default_namespace.clone();
        let client = Client::try_from(config)
            .with_context(|| format!("making a client for the API server at {server}"))?;
        check_service(&client, target, &server).await?;
        let token = if want_token {
            Some(read_token(&client, &target.namespace).await?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening on 127.0.0.1 for the hub forwarder")?;
        let addr = listener.local_addr()?;
        let fwd = Arc::new(Forward {
            client,
            prefix: target.proxy_path(),
        });
        let app = Router::new().fallback(forward).with_state(fwd);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok::<_, anyhow::Error>((format!("http://{addr}"), token, default_namespace))
    })?;
    Ok(KubeProxy {
        url,
        token,
        default_namespace,
        _rt: rt,
    })
}

async fn config(opts: &KubeOptions) -> Result<Config> {
    if opts.kubeconfig.is_none() && opts.context.is_none() {
        // $KUBECONFIG, ~/.kube/config, then the in-cluster service account.
        return Config::infer().await.context(
            "no Kubernetes configuration: give --kubeconfig PATH, set KUBECONFIG, \
             or run inside a cluster",
        );
    }
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        None => {
            Kubeconfig::read().context("reading the kubeconfig ($KUBECONFIG or ~/.kube/config)")?
        }
    };
    if let Some(ctx) = &opts.context {
        if !kubeconfig.contexts.iter().any(|c| &c.name == ctx) {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            bail!(
                "no context {ctx:?} in the kubeconfig; its contexts are: {}",
                if known.is_empty() {
                    "(none)".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        cluster: None,
        user: None,
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("loading the kubeconfig")
}

async fn check_service(client: &Client, target: &ServiceRef, server: &str) -> Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), &target.namespace);
    let svc = match api.get(&target.name).await {
        Ok(s) => s,
        Err(kube::Error::Api(e)) if e.code == 404 => bail!(
            "no Service {}/{} on the cluster at {server}: is podscope deployed? \
             (kubectl apply -k deploy/kubernetes, or helm install podscope deploy/helm/podscope \
             -n podscope); or name the hub with --hub kube://NAMESPACE/SERVICE:PORT",
            target.namespace,
            target.name
        ),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 401 => bail!(
            "the API server at {server} refused to show Service {}/{}: {} \
             (kubectl podscope needs get on services and services/proxy in that namespace)",
            target.namespace,
            target.name,
            e.message
        ),
        Err(e) => {
            return Err(anyhow!(e)).with_context(|| {
                format!(
                    "asking the API server at {server} for Service {}/{}",
                    target.namespace, target.name
                )
            })
        }
    };
    let ports: Vec<(Option<String>, i32)> = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name, p.port))
        .collect();
    let matches = |(name, port): &(Option<String>, i32)| {
        name.as_deref() == Some(target.port.as_str()) || port.to_string() == target.port
    };
    if !ports.iter().any(matches) {
        let list: Vec<String> = ports
            .iter()
            .map(|(n, p)| match n {
                Some(n) => format!("{p} ({n})"),
                None => p.to_string(),
            })
            .collect();
        bail!(
            "Service {}/{} has no port {:?}; its ports are: {}",
            target.namespace,
            target.name,
            target.port,
            list.join(", ")
        );
    }
    Ok(())
}

async fn read_token(client: &Client, namespace: &str) -> Result<String> {
    let (name, key) = TOKEN_SECRET;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let hint = "give --token-file PATH or set PODSCOPE_TOKEN instead";
    let secret = api.get(name).await.with_context(|| {
        format!("reading the hub's token from Secret {namespace}/{name} ({hint})")
    })?;
    let bytes = secret
        .data
        .and_then(|mut d| d.remove(key))
        .ok_or_else(|| anyhow!("Secret {namespace}/{name} has no key {key:?} ({hint})"))?;
    let token = String::from_utf8(bytes.0)
        .map_err(|_| anyhow!("Secret {namespace}/{name} key {key:?} is not text"))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("Secret {namespace}/{name} key {key:?} is empty ({hint})");
    }
    Ok(token)
}

struct Forward {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Headers that belong to one connection and must not be forwarded.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

async fn forward(State(fwd): State<Arc<Forward>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(e) => return proxy_error(StatusCode::BAD_REQUEST, format!("reading the request: {e}")),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", fwd.prefix));
    for (name, value) in &parts.headers {
        if HOP_BY_HOP.contains(name) {
            continue;
        }
        // The API server consumes Authorization (it is replaced by the
        // kubeconfig's credentials); the hub's token rides in its own header.
        let name = if name == header::AUTHORIZATION {
            HeaderName::from_static(crate::auth::PROXY_HEADER)
        } else {
            name.clone()
        };
        out = out.header(name, value);
    }
    let out = match out.body(kube::client::Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(e) => {
            return proxy_error(
                StatusCode::BAD_REQUEST,
                format!("building the request: {e}"),
            )
        }
    };
    match fwd.client.send(out).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(e) => proxy_error(
            StatusCode::BAD_GATEWAY,
            format!("through the Kubernetes API server's service proxy: {e}"),
        ),
    }
}

fn proxy_error(code: StatusCode, msg: String) -> Response {
    (code, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_addresses() {
        let r = ServiceRef::parse(DEFAULT_HUB).unwrap().unwrap();
        assert_eq!(
            r,
            ServiceRef {
                namespace: "podscope".into(),
                name: "podscope-hub".into(),
                port: "7700".into(),
                https: false
            }
        );
        assert_eq!(
            r.proxy_path(),
            "/api/v1/namespaces/podscope/services/podscope-hub:7700/proxy"
        );
        let tls = ServiceRef::parse("kube://obs/https:hub:http")
            .unwrap()
            .unwrap();
        assert!(tls.https);
        assert_eq!(
            tls.proxy_path(),
            "/api/v1/namespaces/obs/services/https:hub:http/proxy"
        );
        assert!(ServiceRef::parse("http://hub:7700").is_none());
        for bad in [
            "kube://hub:7700",
            "kube://ns/hub",
            "kube://NS/hub:1",
            "kube://ns/h_b:1",
        ] {
            let e = ServiceRef::parse(bad).unwrap().unwrap_err();
            assert!(
                format!("{e:#}").contains("kube://NAMESPACE/SERVICE:PORT"),
                "{bad}: {e:#}"
            );
        }
    }
}
