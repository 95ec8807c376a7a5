//! API tokens and roles.
//!
//! A token is a random secret (`ilg_` + 32 random bytes, base64url) given to its holder once;
//! `{data_dir}/state/tokens.json` keeps only its SHA-256 digest, its name and its grants (a role
//! on an endpoint, or on `*`). Roles: `invoke` (call the endpoint through the gateway), `read`
//! (query its tables, see its settings and monitoring), `owner` (change its settings, import
//! labels, run monitors; implies `read` and `invoke`).
//!
//! With authentication off, the data and admin APIs answer loopback clients only and invoking
//! needs nothing. With it on, every API needs `Authorization: Bearer <token>` with the right
//! grant, except invoking an endpoint configured `public = true`. A caller without a valid token
//! gets 401; a valid token without the grant gets 403, whether or not the endpoint exists, so
//! nobody learns of endpoints they have no rights on.

use crate::error::GatewayError;
use axum::http::{header, HeaderMap};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use subtle::ConstantTimeEq;

/// A grant on every endpoint.
pub const ANY_ENDPOINT: &str = "*";
pub(crate) const TOKEN_PREFIX: &str = "ilg_";
/// Failed attempts from one address within `FAILURE_WINDOW` before answers slow down.
const FREE_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long each further failed attempt waits before its 401.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Addresses remembered at most; beyond, the oldest are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Invoke,
    Read,
    Owner,
}

impl Role {
    /// Whether holding `self` allows what `needed` allows.
    fn covers(self, needed: Role) -> bool {
        self == needed || self == Role::Owner
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "invoke" => Ok(Role::Invoke),
            "read" => Ok(Role::Read),
            "owner" => Ok(Role::Owner),
            other => Err(format!("`{other}` is not a role (invoke, read, owner)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Invoke => "invoke",
            Role::Read => "read",
            Role::Owner => "owner",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// An endpoint name or `*`.
    pub endpoint: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub grants: Vec<Grant>,
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// Who is calling: a token's holder, or, with authentication off, a local caller with every
/// right.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Option<String>,
    grants: Option<Vec<Grant>>,
}

impl Caller {
    fn unrestricted() -> Self {
        Caller { name: None, grants: None }
    }

    /// The name the audit table records: the token's, or `local`.
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("local")
    }

    /// Whether the caller holds `role` on `endpoint`.
    pub fn may(&self, endpoint: &str, role: Role) -> bool {
        match &self.grants {
            None => true,
            Some(grants) => {
                grants.iter().any(|g| (g.endpoint == endpoint || g.endpoint == ANY_ENDPOINT) && g.role.covers(role))
            }
        }
    }

    /// Whether the caller holds `role` on at least one endpoint.
    pub fn may_somewhere(&self, role: Role) -> bool {
        self.grants.as_ref().is_none_or(|grants| grants.iter().any(|g| g.role.covers(role)))
    }
}

/// The token file: created, listed and revoked by `inferlog token`, read by the gateway.
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    pub fn new(data_dir: &Path) -> Self {
        TokenStore { path: data_dir.join("state").join("tokens.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> std::io::Result<TokenFile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a token file: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, file: &TokenFile) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        // Digests of secrets: readable by the owner only, whatever the process umask.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&tmp);
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        out.write_all(&serde_json::to_vec_pretty(file)?)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    pub fn list(&self) -> std::io::Result<Vec<StoredToken>> {
        Ok(self.load()?.tokens)
    }

    /// Runs a read-modify-write of the token file under an exclusive lock, so the CLI and a
    /// gateway granting through the API never lose each other's changes.
    fn modify<T>(&self, change: impl FnOnce(&mut TokenFile) -> Result<(T, bool), String>) -> Result<T, String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        let mut file = self.load().map_err(|e| e.to_string())?;
        let (result, changed) = change(&mut file)?;
        if changed {
            self.save(&file).map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        }
        Ok(result)
    }

    /// Makes a token; returns its secret, which is not kept anywhere.
    pub fn create(&self, name: &str, grants: Vec<Grant>) -> Result<String, String> {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b)) {
            return Err(format!("`{name}` must be 1-64 letters, digits, `_`, `-`, `.` or `@`"));
        }
        self.modify(|file| {
            if file.tokens.iter().any(|t| t.name == name) {
                return Err(format!("a token named `{name}` exists; revoke it first"));
            }
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
            file.tokens.push(StoredToken {
                name: name.to_string(),
                sha256: digest_hex(&secret),
                grants,
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            Ok((secret, true))
        })
    }

    /// Removes a token; whether it existed.
    pub fn revoke(&self, name: &str) -> Result<bool, String> {
        self.modify(|file| {
            let before = file.tokens.len();
            file.tokens.retain(|t| t.name != name);
            let removed = file.tokens.len() < before;
            Ok((removed, removed))
        })
    }

    /// Gives the token `name` the role `role` on `endpoint` (or `*`), replacing the role it
    /// held there. `None` if there is no such token; else its grants afterwards.
    pub fn grant(&self, name: &str, endpoint: &str, role: Role) -> Result<Option<Vec<Grant>>, String> {
        self.modify(|file| {
            let Some(token) = file.tokens.iter_mut().find(|t| t.name == name) else { return Ok((None, false)) };
            token.grants.retain(|g| g.endpoint != endpoint);
            token.grants.push(Grant { endpoint: endpoint.to_string(), role });
            Ok((Some(token.grants.clone()), true))
        })
    }

    /// Takes the token's role on `endpoint` away (a grant on `*` stays). `None` if there is
    /// no such token; else whether it held a role there.
    pub fn ungrant(&self, name: &str, endpoint: &str) -> Result<Option<bool>, String> {
        self.modify(|file| {
            let Some(token) = file.tokens.iter_mut().find(|t| t.name == name) else { return Ok((None, false)) };
            let before = token.grants.len();
            token.grants.retain(|g| g.endpoint != endpoint);
            let removed = token.grants.len() < before;
            Ok((Some(removed), removed))
        })
    }
}

/// Whether the request names this machine in `Host` (`localhost`, a loopback address, any
/// port), or names nothing.
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return true };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Who counts as one client (for failed logins and TLS handshakes): an IPv4 address, or an IPv6 client's /64 (one host usually
/// holds a whole /64, so counting single addresses would not slow it down).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn digest_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Decides who may call what. Rereads the token file when it changes, so `inferlog token`
/// takes effect on a running gateway within a second.
pub struct Authenticator {
    enabled: bool,
    store: TokenStore,
    tokens: RwLock<Loaded>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

struct Loaded {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    tokens: Vec<StoredToken>,
}

impl Authenticator {
    pub fn new(enabled: bool, data_dir: &Path) -> Self {
        Authenticator {
            enabled,
            store: TokenStore::new(data_dir),
            tokens: RwLock::new(Loaded { checked: None, modified: None, tokens: Vec::new() }),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller, if it may take `role` on `endpoint` (`None`: on any endpoint, as the query
    /// API, which then shows only the tables of endpoints the caller may read).
    pub async fn authorize(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        endpoint: Option<&str>,
        role: Role,
    ) -> Result<Caller, GatewayError> {
        if !self.enabled {
            // A web page whose name was rebound to 127.0.0.1 reaches loopback too, but with
            // its own name in `Host`.
            if role != Role::Invoke && (!peer.ip().is_loopback() || !local_host(headers)) {
                return Err(GatewayError::AdminForbidden);
            }
            return Ok(Caller::unrestricted());
        }
        let Some(caller) = self.caller(headers) else {
            self.failed(peer.ip()).await;
            return Err(GatewayError::Unauthenticated);
        };
        let allowed = match endpoint {
            Some(endpoint) => caller.may(endpoint, role),
            None => caller.may_somewhere(role),
        };
        if allowed {
            Ok(caller)
        } else {
            Err(GatewayError::PermissionDenied(format!(
                "the token `{}` does not hold the role `{role}` here",
                caller.name.as_deref().unwrap_or_default()
            )))
        }
    }

    /// The holder of the request's bearer token, if it is valid.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let presented = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        let digest = digest_hex(presented);
        self.refresh();
        let loaded = self.tokens.read().expect("token lock");
        // Compare with every token, each in constant time, so timing tells nothing.
        let mut found = None;
        for token in &loaded.tokens {
            if bool::from(token.sha256.as_bytes().ct_eq(digest.as_bytes())) {
                found = Some(token);
            }
        }
        found.map(|t| Caller { name: Some(t.name.clone()), grants: Some(t.grants.clone()) })
    }

    /// The token file changed here: read it again on the next request.
    pub fn invalidate(&self) {
        let mut loaded = self.tokens.write().expect("token lock");
        loaded.checked = None;
        loaded.modified = None;
    }

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    fn refresh(&self) {
        let stale = {
            let loaded = self.tokens.read().expect("token lock");
            loaded.checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        };
        if !stale {
            return;
        }
        let modified = std::fs::metadata(self.store.path()).and_then(|m| m.modified()).ok();
        let mut loaded = self.tokens.write().expect("token lock");
        loaded.checked = Some(Instant::now());
        if modified == loaded.modified && loaded.modified.is_some() {
            return;
        }
        match self.store.list() {
            Ok(tokens) => {
                loaded.tokens = tokens;
                loaded.modified = modified;
            }
            // Keep the tokens known so far: a half-written file must not lock everyone out.
            Err(e) => tracing::warn!(error = %e, "cannot read the token file"),
        }
    }

    /// Counts a failed attempt; past a few in a minute from one address, answers slow down.
    async fn failed(&self, ip: IpAddr) {
        let ip = client_key(ip);
        let delay = {
            let mut failures = self.failures.lock().expect("failure lock");
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            }
            let entry = failures.entry(ip).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= FAILURE_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
            entry.0 > FREE_FAILURES
        };
        metrics::counter!("inferlog_auth_failures_total").increment(1);
        if delay {
            tokio::time::sleep(FAILURE_DELAY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_roles_nest() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let secret = store.create("alice", vec![Grant { endpoint: "iris".into(), role: Role::Owner }]).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() > 40);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&secret) && text.contains(&digest_hex(&secret)));
        assert!(store.create("alice", vec![]).unwrap_err().contains("exists"));
        assert!(store.create("bad name", vec![]).is_err());

        let auth = Authenticator::new(true, dir.path());
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {secret}").parse().unwrap());
        let caller = auth.caller(&headers).unwrap();
        assert_eq!(caller.name.as_deref(), Some("alice"));
        assert!(caller.may("iris", Role::Read) && caller.may("iris", Role::Invoke) && caller.may("iris", Role::Owner));
        assert!(!caller.may("other", Role::Invoke));
        headers.insert(header::AUTHORIZATION, "Bearer ilg_wrong".parse().unwrap());
        assert!(auth.caller(&headers).is_none());

        let reader = Caller { name: None, grants: Some(vec![Grant { endpoint: ANY_ENDPOINT.into(), role: Role::Read }]) };
        assert!(reader.may("anything", Role::Read) && !reader.may("anything", Role::Invoke) && !reader.may("x", Role::Owner));
        assert_eq!(store.grant("alice", "other", Role::Read).unwrap().unwrap().len(), 2);
        assert_eq!(store.grant("alice", "other", Role::Invoke).unwrap().unwrap().len(), 2, "a grant replaces the role there");
        assert_eq!(store.ungrant("alice", "other").unwrap(), Some(true));
        assert_eq!(store.ungrant("alice", "other").unwrap(), Some(false));
        assert_eq!(store.grant("nobody", "iris", Role::Read).unwrap(), None);
        assert_eq!(store.list().unwrap()[0].grants, vec![Grant { endpoint: "iris".into(), role: Role::Owner }]);
        assert!(store.revoke("alice").unwrap() && !store.revoke("alice").unwrap());
    }

    #[test]
    fn failures_of_one_ipv6_host_count_together() {
        let key = |a: &str| client_key(a.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn without_authentication_only_local_names_reach_the_data_apis() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, h.parse().unwrap());
            local_host(&headers)
        };
        assert!(host("localhost:8080") && host("127.0.0.1:8080") && host("[::1]:8080") && host("LOCALHOST"));
        assert!(!host("evil.example:8080") && !host("127.0.0.1.evil.example") && !host("[2001:db8::1]:80"));
        assert!(local_host(&HeaderMap::new()));
    }
}
