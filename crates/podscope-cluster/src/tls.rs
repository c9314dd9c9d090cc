//! TLS for cluster mode: the hub's certificate and key, the clients' trust
//! (`--tls-ca` or the system's CA certificates), the listener that serves TLS
//! on the hub's one port, and TLS failures told in words a user can act on.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake, on both sides.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// What the hub answers a plain-HTTP request on its TLS port.
pub const PLAIN_ON_TLS_PORT: &str = "this podscope hub port speaks TLS only: use an https:// hub URL (with --tls-ca CA.pem unless a public CA signed the hub's certificate)";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM reading error that names the flag and the file.
fn pem_error(flag: &str, path: &Path, what: &str, e: pem::Error) -> anyhow::Error {
    let p = path.display();
    match e {
        pem::Error::Io(e) => anyhow!("{flag} {p}: cannot read it: {e}"),
        pem::Error::NoItemsFound => anyhow!("{flag} {p}: no {what} in it; expected PEM text"),
        e => anyhow!("{flag} {p}: not a valid PEM file ({e})"),
    }
}

/// The certificates in a PEM file; at least one.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let what = "certificate ('-----BEGIN CERTIFICATE-----')";
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(flag, path, what, e))?;
    if certs.is_empty() {
        return Err(pem_error(flag, path, what, pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The hub's TLS settings from `--tls-cert` and `--tls-key` (both or
/// neither): None for plain HTTP. ALPN offers h2 (the agents' gRPC) and
/// http/1.1 (REST).
pub fn server_config(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Arc<ServerConfig>>> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => bail!("--tls-cert needs --tls-key: the PEM file with the certificate's private key (give both for TLS, or neither for plain HTTP)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert: the PEM file with the hub's certificate (give both for TLS, or neither for plain HTTP)"),
    };
    let certs = read_certs("--tls-cert", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        pem_error(
            "--tls-key",
            key,
            "private key ('-----BEGIN PRIVATE KEY-----', or RSA/EC PRIVATE KEY)",
            e,
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow!(
                "--tls-key {}: this key does not belong to the certificate in --tls-cert {}",
                key.display(),
                cert.display()
            ),
            e => anyhow!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            ),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// How a client (the CLI or an agent) checks the hub's certificate: against
/// the CA in `--tls-ca` only, or else against the system's CA certificates.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    /// The `--tls-ca` file; None: the system's CA certificates.
    ca: Option<PathBuf>,
    /// For the REST client (http.rs): ALPN http/1.1.
    http: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trust for a hub URL: Some for `https://`, None for `http://`.
    /// `--tls-ca` with an `http://` URL is an error rather than a silently
    /// unencrypted link.
    pub fn for_url(url: &str, ca: Option<&Path>) -> Result<Option<ClientTls>> {
        if url.starts_with("https://") {
            return ClientTls::new(ca).map(Some);
        }
        if let Some(ca) = ca {
            bail!(
                "--tls-ca {} is for an https:// hub URL, but the hub URL is {url}: use https:// to reach a hub that has --tls-cert, or drop --tls-ca",
                ca.display()
            );
        }
        Ok(None)
    }

    /// Trust the CA certificates in `ca` only, or with None the system's.
    pub fn new(ca: Option<&Path>) -> Result<ClientTls> {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(path) => {
                for c in read_certs("--tls-ca", path)? {
                    roots.add(c).map_err(|e| {
                        anyhow!(
                            "--tls-ca {}: not a usable CA certificate: {e}",
                            path.display()
                        )
                    })?;
                }
            }
            // No system certificates is not an error here: the hub's
            // certificate is then not trusted, and that message says what to do.
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let mut http = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS protocol versions: {e}"))?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            roots: Arc::new(roots),
            ca: ca.map(Path::to_path_buf),
            http: Arc::new(http),
        })
    }

    /// The system's CA certificates, loaded once (for `http::request`).
    pub(crate) fn system() -> io::Result<&'static ClientTls> {
        static SYSTEM: OnceLock<Result<ClientTls, String>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| ClientTls::new(None).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    /// The same trust for the agent's gRPC link (tonic adds ALPN h2).
    pub fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .trust_anchors(self.roots.roots.iter().cloned())
            .timeout(HANDSHAKE)
    }

    fn trusted(&self) -> String {
        match &self.ca {
            Some(ca) => format!("the CA in --tls-ca {}", ca.display()),
            None if self.roots.is_empty() => {
                "any CA: this system has no CA certificates and no --tls-ca was given".into()
            }
            None => "a CA among the system's CA certificates (no --tls-ca was given)".into(),
        }
    }

    /// A TLS connection over `tcp` to `host` (a name or an address), the
    /// handshake done within [`HANDSHAKE`]; errors say what went wrong.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        url: &str,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' in the hub URL {url} is not a host name or address"),
            )
        })?;
        let handshake = tokio_rustls::TlsConnector::from(self.http.clone()).connect(name, tcp);
        match tokio::time::timeout(HANDSHAKE, handshake).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                let msg = explain(chain(&e), url, Some(self))
                    .unwrap_or_else(|| format!("TLS handshake with the hub at {url}: {e}"));
                Err(io::Error::new(e.kind(), msg))
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no TLS answer from the hub at {url} within {}s (is this the hub's port?)",
                    HANDSHAKE.as_secs()
                ),
            )),
        }
    }
}

/// An error and its sources.
pub fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

/// A TLS failure found in an error chain, told in words a user can act on;
/// None when the chain holds no TLS failure.
pub fn explain<'a>(
    errors: impl Iterator<Item = &'a (dyn StdError + 'static)>,
    url: &str,
    tls: Option<&ClientTls>,
) -> Option<String> {
    for e in errors {
        // tokio-rustls and rustls's own streams wrap rustls errors in io::Error,
        // whose source() skips the wrapped error itself.
        let io = e.downcast_ref::<io::Error>();
        if let Some(r) = e.downcast_ref::<rustls::Error>().or_else(|| {
            io.and_then(io::Error::get_ref)
                .and_then(|i| i.downcast_ref::<rustls::Error>())
        }) {
            return Some(describe(r, url, tls));
        }
        if url.starts_with("https://")
            && io.is_some_and(|i| i.kind() == io::ErrorKind::UnexpectedEof)
        {
            return Some(format!(
                "the hub at {url} closed the connection during the TLS handshake: does it serve TLS on this port (--tls-cert)? For a plain-HTTP hub use http://"
            ));
        }
    }
    None
}

fn describe(e: &rustls::Error, url: &str, tls: Option<&ClientTls>) -> String {
    let trusted = tls.map_or_else(|| "a trusted CA".to_string(), ClientTls::trusted);
    let fix = "give --tls-ca with the PEM file of the CA that signed the hub's certificate (in Kubernetes: ca.crt of the Secret podscope-hub-tls)";
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                CertificateError::UnknownIssuer => format!("it is not signed by {trusted}"),
                CertificateError::BadSignature => {
                    format!("its signature does not verify against {trusted}")
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    return format!(
                        "the hub's TLS certificate was not trusted: it is not valid for the host in {url} ({e}); dial the hub by a name or address the certificate lists, or make a certificate whose subjectAltName includes it"
                    )
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    return format!("the hub's TLS certificate was not trusted: it has expired ({e}); renew it")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    return format!("the hub's TLS certificate was not trusted: it is not valid yet ({e}); check the clocks")
                }
                // webpki's reason, which rustls passes on only as an opaque
                // `Other`: the hub serves the CA's own certificate.
                CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                    return "the hub's TLS certificate was not trusted: it is a CA certificate \
                        (basicConstraints CA:TRUE), not a server certificate: give the hub (--tls-cert) \
                        a certificate signed by that CA for the hub's names, and keep the CA's own \
                        for --tls-ca (docs/cluster.md, \"Making a certificate\")"
                        .to_string()
                }
                CertificateError::Other(o) => format!("it was refused ({o})"),
                _ => e.to_string(),
            };
            format!("the hub's TLS certificate was not trusted: {why}; {fix}")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the hub at {url} did not answer in TLS: it seems to serve plain HTTP on this port; use an http:// URL, or give the hub --tls-cert and --tls-key"
        ),
        rustls::Error::AlertReceived(a) => {
            format!("the hub at {url} refused the TLS handshake (alert {a:?})")
        }
        e => format!("TLS with the hub at {url} failed: {e}"),
    }
}

/// The error of an agent's failed link to the hub, explained: TLS failures
/// in plain words, and for an `http://` URL a hub that wants TLS (tonic
/// only sees an HTTP/2 protocol error then).
pub async fn explain_link(url: &str, tls: Option<&ClientTls>, e: anyhow::Error) -> anyhow::Error {
    if let Some(m) = explain(e.chain(), url, tls) {
        return anyhow!(m);
    }
    if url.starts_with("http://") {
        let u = url.to_string();
        let answer = tokio::task::spawn_blocking(move || {
            let r = crate::http::quick_get(&u, "/healthz", Duration::from_secs(2)).ok()?;
            (r.status == 400).then(|| r.text().ok()).flatten()
        })
        .await
        .ok()
        .flatten();
        if answer.is_some_and(|t| t.contains(PLAIN_ON_TLS_PORT)) {
            return anyhow!(PLAIN_ON_TLS_PORT);
        }
    }
    e
}

/// The hub's port for `axum::serve`: plain, or TLS only.
#[derive(Debug)]
pub enum HubListener {
    /// Plain HTTP (no --tls-cert).
    Plain(TcpListener),
    /// TLS: connections arrive after their handshake, which runs in its own
    /// task so a slow client holds up no other. A plain-HTTP request gets a
    /// 400 saying to use https://, not a reset.
    Tls {
        /// Connections whose handshake is done.
        ready: mpsc::Receiver<(HubStream, SocketAddr)>,
        /// The bound address.
        local: SocketAddr,
    },
}

impl HubListener {
    /// Serves `tcp` plain, or with TLS when `config` (from [`server_config`]) is given.
    pub fn new(tcp: TcpListener, config: Option<Arc<ServerConfig>>) -> io::Result<HubListener> {
        let Some(config) = config else {
            return Ok(HubListener::Plain(tcp));
        };
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(HubListener::Tls { ready, local })
    }
}

impl axum::serve::Listener for HubListener {
    type Io = HubStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            HubListener::Plain(l) => {
                let (s, a) = axum::serve::Listener::accept(l).await;
                (HubStream::Plain(s), a)
            }
            HubListener::Tls { ready, .. } => match ready.recv().await {
                Some(c) => c,
                // The accept task ends only when this listener is dropped.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match self {
            HubListener::Plain(l) => l.local_addr(),
            HubListener::Tls { local, .. } => Ok(*local),
        }
    }
}

/// A connection to the hub: plain or TLS.
#[derive(Debug)]
pub enum HubStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for HubStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HubStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HubStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HubStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HubStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HubStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HubStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            HubStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            HubStream::Plain(s) => s.is_write_vectored(),
            HubStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HubStream::Plain(s) => Pin::new(s).poll_flush(cx),
            HubStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HubStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HubStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Ready = mpsc::Sender<(HubStream, SocketAddr)>;

async fn accept_loop(tcp: TcpListener, acceptor: TlsAcceptor, ready: Ready) {
    loop {
        let (stream, peer) = tokio::select! {
            // axum dropped the listener: the hub is shutting down.
            _ = ready.closed() => return,
            r = tcp.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // E.g. out of file descriptors: wait for some to close.
                    eprintln!("podscope hub: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        // Without it, the handshake's last flight and small records (a
        // response, one NDJSON event) wait on Nagle and delayed ACKs:
        // measured 2-7 ms more per request over loopback.
        let _ = stream.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE, handshake(&acceptor, stream)).await {
                Ok(Ok(Some(s))) => {
                    let _ = ready.send((HubStream::Tls(Box::new(s)), peer)).await;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    let alert = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                    let hint = match alert {
                        Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA)) => {
                            " (the client does not trust the CA of this hub's certificate: it needs --tls-ca)"
                        }
                        Some(rustls::Error::AlertReceived(
                            AlertDescription::BadCertificate | AlertDescription::CertificateUnknown,
                        )) => " (the client rejected this hub's certificate: see the client's message)",
                        _ => "",
                    };
                    eprintln!("podscope hub: TLS handshake with {peer} failed: {e}{hint}");
                }
                Err(_) => eprintln!(
                    "podscope hub: TLS handshake with {peer} took over {}s; closed",
                    HANDSHAKE.as_secs()
                ),
            }
        });
    }
}

/// TLS if the client starts a TLS handshake; a plain-HTTP client is told to
/// use https:// (None), and so is nothing for a connection closed at once.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None); // a TCP probe
    }
    // 0x16: a TLS handshake record.
    if first[0] != 0x16 {
        refuse_plain(stream).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// Answers a plain-HTTP request with 400 and [`PLAIN_ON_TLS_PORT`].
async fn refuse_plain(mut s: TcpStream) {
    let mut buf = vec![0u8; 8192];
    // Read the request head first and drain the rest after answering:
    // closing with unread data resets the connection, and the client might
    // lose the answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut n = 0;
        while n < buf.len() {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let body = serde_json::json!({ "error": PLAIN_ON_TLS_PORT }).to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(s.read(&mut buf).await, Ok(k) if k > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("podscope-tls-unit-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn server_flags_both_or_neither() {
        assert!(server_config(None, None).unwrap().is_none());
        let e = server_config(Some(Path::new("c.pem")), None).unwrap_err();
        assert!(e.to_string().contains("--tls-cert needs --tls-key"), "{e}");
        let e = server_config(None, Some(Path::new("k.pem"))).unwrap_err();
        assert!(e.to_string().contains("--tls-key needs --tls-cert"), "{e}");
    }

    #[test]
    fn pem_errors_name_the_file() {
        let missing = Path::new("/nonexistent/hub.pem");
        let e = server_config(Some(missing), Some(missing)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--tls-cert /nonexistent/hub.pem: cannot read it"),
            "{e}"
        );
        let text = temp("text", "hello, not a certificate\n");
        let e = ClientTls::new(Some(&text)).unwrap_err().to_string();
        assert!(
            e.contains("--tls-ca")
                && e.contains(&*text.to_string_lossy())
                && e.contains("no certificate"),
            "{e}"
        );
        let broken = temp("broken", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let e = ClientTls::new(Some(&broken)).unwrap_err().to_string();
        assert!(e.contains("not a valid PEM file"), "{e}");
        let _ = std::fs::remove_file(text);
        let _ = std::fs::remove_file(broken);
    }

    #[test]
    fn ca_only_for_https() {
        assert!(ClientTls::for_url("http://hub:7700", None)
            .unwrap()
            .is_none());
        let e = ClientTls::for_url("http://hub:7700", Some(Path::new("ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("is for an https:// hub URL"), "{e}");
        // The system's CAs, however many this machine has.
        assert!(ClientTls::for_url("https://hub:7700", None)
            .unwrap()
            .is_some());
    }

    /// Errors as tokio-rustls and rustls's streams report them: inside io::Error.
    fn explained(e: rustls::Error) -> String {
        let io = io::Error::new(io::ErrorKind::InvalidData, e);
        let tls = ClientTls::new(None).unwrap();
        explain(chain(&io), "https://hub:7700", Some(&tls)).unwrap()
    }

    #[test]
    fn tls_failures_in_words() {
        let m = explained(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(m.contains("not trusted") && m.contains("--tls-ca"), "{m}");
        let m = explained(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert!(m.contains("expired"), "{m}");
        let m = explained(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(
            m.contains("not valid for the host in https://hub:7700"),
            "{m}"
        );
        let m = explained(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(m.contains("plain HTTP") && m.contains("http://"), "{m}");
        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(chain(&plain), "https://hub:7700", None), None);
    }
}
