//! HTTPS: the listener's TLS (rustls) and the trust the gateway places in https upstreams.
//!
//! Handshakes run in their own tasks, bounded in number and time, so a client that opens a
//! connection and sends nothing (or trickles a ClientHello) holds neither the accept loop nor
//! other clients back.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use crate::server::{Accept, Accepted, ConnectionSlots};

/// A handshake not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at most; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 1024;
/// Handshakes in progress from one client (an IPv4 address or an IPv6 /64) at most; its
/// further connections are closed at once, so one host cannot take every handshake slot.
const MAX_HANDSHAKES_PER_CLIENT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("{path} holds no PEM {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("the certificate {cert} and key {key} do not make a TLS identity: {reason}")]
    Identity { cert: PathBuf, key: PathBuf, reason: String },
}

/// The crypto provider is named explicitly: more than one is compiled in.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read { what, path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The listener's identity from PEM files (`tls.cert`, `tls.key`), HTTP/1.1 over TLS 1.2/1.3.
/// The files are read again when they change (checked at most every few seconds, on a
/// handshake), so a renewed certificate is served without a restart; a renewal that does not
/// load keeps the previous identity and is logged.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = ReloadingIdentity::load(cert, key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Identity { cert: cert.to_path_buf(), key: key.to_path_buf(), reason: e.to_string() })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How often a handshake may look at the certificate files' modification times.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    current: std::sync::RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    identity: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingIdentity {
    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let modified = (modified(cert), modified(key));
        let identity = Arc::new(identity(cert, key)?);
        Ok(ReloadingIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: std::sync::RwLock::new(Loaded { identity, modified, checked: Instant::now() }),
        })
    }

    fn reload_if_changed(&self) {
        {
            let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.checked.elapsed() < RELOAD_CHECK_INTERVAL {
                return;
            }
        }
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.checked.elapsed() < RELOAD_CHECK_INTERVAL {
            return;
        }
        current.checked = Instant::now();
        let now = (modified(&self.cert), modified(&self.key));
        if now == current.modified {
            return;
        }
        match identity(&self.cert, &self.key) {
            Ok(identity) => {
                current.identity = Arc::new(identity);
                current.modified = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            // Half-renewed (the certificate written, not yet the key): tried again next time.
            Err(e) => tracing::warn!(error = %e, "the changed TLS certificate does not load; serving the previous one"),
        }
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).identity.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A certificate chain and its private key, checked to belong together.
fn identity(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = certificates("certificate", cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        what: "private key",
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private_key, &provider())
        .map_err(|e| TlsError::Identity { cert: cert.to_path_buf(), key: key.to_path_buf(), reason: e.to_string() })
}

/// Trust for https upstreams and webhooks: the system's roots plus the certificates in
/// `extra_ca` (`tls.upstream_ca`), for models behind a private CA.
pub fn client_config(extra_ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!(error = %error, "a system root certificate could not be loaded");
    }
    let (_, ignored) = roots.add_parsable_certificates(system.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "system root certificates rustls cannot use were skipped");
    }
    if let Some(path) = extra_ca {
        for cert in certificates("CA certificate", path)? {
            roots.add(cert).map_err(|e| TlsError::Read {
                what: "CA certificate",
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted root certificates: https upstreams will be refused (set tls.upstream_ca)");
    }
    // No ALPN here: the HTTP client using the config sets the protocols it speaks.
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The peer's address, for the listeners the gateway serves on (plain or TLS).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A plain TCP listener that accepts a connection only when it has a free slot, and sets
/// `TCP_NODELAY` on every connection: responses are written in parts, and Nagle's algorithm
/// with delayed ACKs would add ~40 ms.
pub struct PlainListener {
    listener: TcpListener,
    slots: ConnectionSlots,
}

impl PlainListener {
    pub fn new(listener: TcpListener, slots: ConnectionSlots) -> Self {
        PlainListener { listener, slots }
    }
}

impl Accept for PlainListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> Accepted<TcpStream> {
        let slot = self.slots.acquire().await;
        let (mut tcp, peer) = accept_tcp(&self.listener).await;
        set_nodelay(&mut tcp);
        Accepted { io: tcp, peer, slot }
    }
}

/// The next TCP connection; failures (out of file descriptors and the like) wait rather than spin.
async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn set_nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Accepts TCP connections (each taking a connection slot, handshakes included) and hands on
/// those whose TLS handshake succeeded.
pub struct TlsListener {
    ready: mpsc::Receiver<Accepted<TlsStream<TcpStream>>>,
    local_addr: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Without a bound on connections (handshakes are bounded still).
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        Self::with_slots(listener, config, ConnectionSlots::unbounded())
    }

    pub fn with_slots(listener: TcpListener, config: Arc<ServerConfig>, slots: ConnectionSlots) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender, slots));
        Ok(TlsListener { ready, local_addr, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The accept loop owns the socket: stopping it closes the port.
        self.acceptor_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, ready: mpsc::Sender<Accepted<TlsStream<TcpStream>>>, slots: ConnectionSlots) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let per_client: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        let slot = slots.acquire().await;
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (mut tcp, peer) = accept_tcp(&listener).await;
        let client = crate::auth::client_key(peer.ip());
        {
            let mut in_progress = per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = in_progress.entry(client).or_default();
            if *count >= MAX_HANDSHAKES_PER_CLIENT {
                metrics::counter!("inferlog_tls_handshakes_refused_total").increment(1);
                continue; // dropping the stream closes it
            }
            *count += 1;
        }
        set_nodelay(&mut tcp);
        let acceptor = acceptor.clone();
        let handed_on = ready.clone();
        let per_client = per_client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = ClientSlot { per_client, client };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = handed_on.send(Accepted { io: tls, peer, slot }).await;
                }
                Ok(Err(e)) => {
                    metrics::counter!("inferlog_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::counter!("inferlog_tls_handshake_failures_total").increment(1);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
        if ready.is_closed() {
            return;
        }
    }
}

/// One handshake in progress from `client`, counted until dropped.
struct ClientSlot {
    per_client: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut in_progress = self.per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = in_progress.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                in_progress.remove(&self.client);
            }
        }
    }
}

impl TlsListener {
    async fn next(&mut self) -> Accepted<TlsStream<TcpStream>> {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener goes.
            None => std::future::pending().await,
        }
    }
}

impl Accept for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn accept(&mut self) -> Accepted<Self::Io> {
        self.next().await
    }
}

/// For serving with `axum::serve` (the tests' https upstreams).
impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = self.next().await;
        (accepted.io, accepted.peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
