//! API tokens and roles.
//!
//! A token is a random secret (`ilg_` + 32 random bytes, base64url) given to its holder once;
//! the `tokens` document of the shared control state ([`inferlog_core::shared_state`]) keeps
//! only its SHA-256 digest, its name and its grants (a role
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
use inferlog_core::shared_state::{Fresh, TOKENS};
use inferlog_core::SharedState;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
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

/// The tokens: created, listed and revoked by `inferlog token` and the grants API, read by
/// every gateway. They are the `tokens` document of the shared control state.
#[derive(Clone)]
pub struct TokenStore {
    shared: SharedState,
}

impl TokenStore {
    pub fn new(shared: SharedState) -> Self {
        TokenStore { shared }
    }

    /// Where the tokens are, for messages.
    pub fn location(&self) -> String {
        self.shared.location(TOKENS)
    }

    pub async fn list(&self) -> Result<Vec<StoredToken>, String> {
        Ok(self.shared.load::<TokenFile>(TOKENS).await?.tokens)
    }

    /// A read-modify-write of the tokens that never loses a concurrent change (by the CLI or
    /// another gateway): see [`SharedState::modify`].
    async fn modify<T>(&self, change: impl FnMut(&mut TokenFile) -> Result<(T, bool), String>) -> Result<T, String> {
        self.shared.modify(TOKENS, change).await
    }

    /// Makes a token; returns its secret, which is not kept anywhere.
    pub async fn create(&self, name: &str, grants: Vec<Grant>) -> Result<String, String> {
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
                grants: grants.clone(),
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            Ok((secret, true))
        })
        .await
    }

    /// Removes a token; whether it existed.
    pub async fn revoke(&self, name: &str) -> Result<bool, String> {
        self.modify(|file| {
            let before = file.tokens.len();
            file.tokens.retain(|t| t.name != name);
            let removed = file.tokens.len() < before;
            Ok((removed, removed))
        })
        .await
    }

    /// Gives the token `name` the role `role` on `endpoint` (or `*`), replacing the role it
    /// held there. `None` if there is no such token; else its grants afterwards.
    pub async fn grant(&self, name: &str, endpoint: &str, role: Role) -> Result<Option<Vec<Grant>>, String> {
        self.modify(|file| {
            let Some(token) = file.tokens.iter_mut().find(|t| t.name == name) else { return Ok((None, false)) };
            token.grants.retain(|g| g.endpoint != endpoint);
            token.grants.push(Grant { endpoint: endpoint.to_string(), role });
            Ok((Some(token.grants.clone()), true))
        })
        .await
    }

    /// Takes the token's role on `endpoint` away (a grant on `*` stays). `None` if there is
    /// no such token; else whether it held a role there.
    pub async fn ungrant(&self, name: &str, endpoint: &str) -> Result<Option<bool>, String> {
        self.modify(|file| {
            let Some(token) = file.tokens.iter_mut().find(|t| t.name == name) else { return Ok((None, false)) };
            let before = token.grants.len();
            token.grants.retain(|g| g.endpoint != endpoint);
            let removed = token.grants.len() < before;
            Ok((Some(removed), removed))
        })
        .await
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

/// Decides who may call what. Holds the tokens as last read from the shared state; the
/// gateway's follower polls for changes ([`Authenticator::poll`]), so a token created or
/// revoked anywhere in the fleet takes effect within its poll interval.
pub struct Authenticator {
    enabled: bool,
    store: TokenStore,
    tokens: RwLock<Known>,
    /// One poll at a time: of two overlapping polls the one that read the older document
    /// could otherwise put it back last.
    polling: tokio::sync::Mutex<()>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

struct Known {
    version: Option<String>,
    tokens: Vec<StoredToken>,
}

impl Authenticator {
    pub fn new(enabled: bool, store: TokenStore) -> Self {
        Authenticator {
            enabled,
            store,
            tokens: RwLock::new(Known { version: None, tokens: Vec::new() }),
            polling: tokio::sync::Mutex::new(()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many tokens were known at the last poll.
    pub fn token_count(&self) -> usize {
        self.tokens.read().expect("token lock").tokens.len()
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

    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// Reads the tokens again if they changed; whether they did. A document that cannot be
    /// read or parsed leaves the known tokens in place: a bad write must not lock everyone out.
    pub async fn poll(&self) -> Result<bool, String> {
        let _one_at_a_time = self.polling.lock().await;
        let known = self.tokens.read().expect("token lock").version.clone();
        let Fresh::Changed(doc) = self.store.shared.read_if_changed(TOKENS, known.as_deref()).await? else { return Ok(false) };
        let (tokens, version) = match doc {
            Some(doc) => {
                let file: TokenFile = serde_json::from_slice(&doc.bytes).map_err(|e| format!("{} is not valid: {e}", self.store.location()))?;
                (file.tokens, Some(doc.version))
            }
            None => (Vec::new(), None),
        };
        *self.tokens.write().expect("token lock") = Known { version, tokens };
        Ok(true)
    }

    /// Takes a change made here at once, rather than at the next poll.
    pub async fn reload(&self) {
        if let Err(e) = self.poll().await {
            tracing::warn!(error = %e, "cannot read the tokens");
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

    #[tokio::test]
    async fn tokens_are_stored_hashed_and_roles_nest() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(SharedState::local(dir.path().to_path_buf()));
        let secret = store.create("alice", vec![Grant { endpoint: "iris".into(), role: Role::Owner }]).await.unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() > 40);
        let text = std::fs::read_to_string(store.location()).unwrap();
        assert!(!text.contains(&secret) && text.contains(&digest_hex(&secret)));
        assert!(store.create("alice", vec![]).await.unwrap_err().contains("exists"));
        assert!(store.create("bad name", vec![]).await.is_err());

        let auth = Authenticator::new(true, store.clone());
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {secret}").parse().unwrap());
        assert!(auth.caller(&headers).is_none(), "not known before the tokens are read");
        assert!(auth.poll().await.unwrap() && !auth.poll().await.unwrap(), "read once, then unchanged");
        let caller = auth.caller(&headers).unwrap();
        assert_eq!(caller.name.as_deref(), Some("alice"));
        assert!(caller.may("iris", Role::Read) && caller.may("iris", Role::Invoke) && caller.may("iris", Role::Owner));
        assert!(!caller.may("other", Role::Invoke));
        headers.insert(header::AUTHORIZATION, "Bearer ilg_wrong".parse().unwrap());
        assert!(auth.caller(&headers).is_none());

        let reader = Caller { name: None, grants: Some(vec![Grant { endpoint: ANY_ENDPOINT.into(), role: Role::Read }]) };
        assert!(reader.may("anything", Role::Read) && !reader.may("anything", Role::Invoke) && !reader.may("x", Role::Owner));
        assert_eq!(store.grant("alice", "other", Role::Read).await.unwrap().unwrap().len(), 2);
        assert_eq!(store.grant("alice", "other", Role::Invoke).await.unwrap().unwrap().len(), 2, "a grant replaces the role there");
        assert_eq!(store.ungrant("alice", "other").await.unwrap(), Some(true));
        assert_eq!(store.ungrant("alice", "other").await.unwrap(), Some(false));
        assert_eq!(store.grant("nobody", "iris", Role::Read).await.unwrap(), None);
        assert_eq!(store.list().await.unwrap()[0].grants, vec![Grant { endpoint: "iris".into(), role: Role::Owner }]);
        assert!(store.revoke("alice").await.unwrap() && !store.revoke("alice").await.unwrap());
        // A half-written document keeps the tokens known so far.
        std::fs::write(store.location(), b"{").unwrap();
        assert!(auth.poll().await.unwrap_err().contains("is not valid"));
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
