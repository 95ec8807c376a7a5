//! The admin API: read and change an endpoint's capture settings and its traffic (target
//! weights, shadow share) at runtime. Changes are saved in the shared control state (the
//! `capture` and `traffic` documents, see [`inferlog_core::shared_state`]), reach every gateway
//! of the fleet from there, and win over the config file on restart. Without authentication
//! the admin API answers loopback clients only (see [`crate::auth`]).

use crate::error::GatewayError;
use crate::forward::Gateway;
use crate::tls::ClientAddr;
use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use inferlog_core::shared_state::Fresh;
use inferlog_core::SharedState;
use std::sync::Arc;

/// The live part of an endpoint's capture settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CaptureState {
    pub enabled: bool,
    pub sampling_fraction: f64,
}

/// A change to the capture settings; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureChange {
    pub enabled: Option<bool>,
    pub sampling_fraction: Option<f64>,
}

/// The live traffic settings of an endpoint: each target's weight and the share of captured
/// requests copied to the shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficState {
    pub weights: BTreeMap<String, u32>,
    pub shadow_fraction: f64,
}

/// What was changed through the API, saved per endpoint: only the fields and targets a change
/// named, so the rest follows the config file (a shadow added to the file later still gets its
/// configured share).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_fraction: Option<f64>,
}

impl TrafficChange {
    /// `later` on top of this one.
    fn then(mut self, later: TrafficChange) -> TrafficChange {
        if let Some(weights) = later.weights {
            self.weights.get_or_insert_with(BTreeMap::new).extend(weights);
        }
        if later.shadow_fraction.is_some() {
            self.shadow_fraction = later.shadow_fraction;
        }
        self
    }

    /// The endpoint's traffic: its configured weights and shadow share with these changes on
    /// top. Changes to targets or a shadow the config no longer has are ignored, and so are
    /// weights that would leave no target with traffic.
    pub fn apply(&self, settings: &inferlog_core::EndpointSettings) -> TrafficState {
        let configured: BTreeMap<String, u32> = settings.targets.iter().map(|t| (t.name.clone(), t.weight)).collect();
        let changed = self.changed_weights(settings);
        let mut state = TrafficState {
            weights: if changed.values().any(|w| *w > 0) { changed } else { configured },
            shadow_fraction: settings.shadow.as_ref().map_or(0.0, |s| s.fraction),
        };
        if let (Some(f), Some(_)) = (self.shadow_fraction, &settings.shadow) {
            state.shadow_fraction = f;
        }
        state
    }

    /// The configured weights with the changed ones of targets that exist.
    fn changed_weights(&self, settings: &inferlog_core::EndpointSettings) -> BTreeMap<String, u32> {
        let mut weights: BTreeMap<String, u32> = settings.targets.iter().map(|t| (t.name.clone(), t.weight)).collect();
        for (target, weight) in self.weights.iter().flatten() {
            if let Some(w) = weights.get_mut(target) {
                *w = *weight;
            }
        }
        weights
    }
}

/// Runtime settings changed through the admin API, one entry per endpoint, in one document
/// of the shared control state (so every gateway of a fleet applies them).
pub struct StateStore<T> {
    shared: SharedState,
    document: &'static str,
    /// Held while a change or a poll applies the document here, so that a poll that read
    /// the document just before a local change cannot put the older state back.
    pub(crate) applying: tokio::sync::Mutex<()>,
    _kind: std::marker::PhantomData<T>,
}

pub type CaptureStateStore = StateStore<CaptureState>;
pub type TrafficStateStore = StateStore<TrafficChange>;

impl CaptureStateStore {
    pub fn capture(shared: SharedState) -> Self {
        StateStore::new(shared, inferlog_core::shared_state::CAPTURE)
    }
}

impl TrafficStateStore {
    pub fn traffic(shared: SharedState) -> Self {
        StateStore::new(shared, inferlog_core::shared_state::TRAFFIC)
    }
}

impl<T: Serialize + serde::de::DeserializeOwned + Clone> StateStore<T> {
    pub fn new(shared: SharedState, document: &'static str) -> Self {
        StateStore { shared, document, applying: tokio::sync::Mutex::new(()), _kind: std::marker::PhantomData }
    }

    pub fn document(&self) -> &'static str {
        self.document
    }

    pub async fn load(&self) -> Result<BTreeMap<String, T>, String> {
        self.shared.load(self.document).await
    }

    /// The saved entries and their version, if the document is no longer at version `known`.
    async fn changed_since(&self, known: Option<&str>) -> Result<Option<(BTreeMap<String, T>, Option<String>)>, String> {
        match self.shared.read_if_changed(self.document, known).await? {
            Fresh::Unchanged => Ok(None),
            Fresh::Changed(None) => Ok(Some((BTreeMap::new(), None))),
            Fresh::Changed(Some(doc)) => {
                let all = serde_json::from_slice(&doc.bytes).map_err(|e| format!("{} is not valid: {e}", self.shared.location(self.document)))?;
                Ok(Some((all, Some(doc.version))))
            }
        }
    }

    /// Replaces the endpoint's entry with `change(saved entry)`, conditionally on the
    /// document not having changed meanwhile (else `change` runs again on the newer entry).
    async fn change(&self, endpoint: &str, mut change: impl FnMut(Option<T>) -> Result<T, GatewayError>) -> Result<T, GatewayError> {
        let mut refused = None;
        let saved = self
            .shared
            .modify::<BTreeMap<String, T>, _>(self.document, |all| match change(all.get(endpoint).cloned()) {
                Ok(new) => {
                    all.insert(endpoint.to_string(), new.clone());
                    Ok((Some(new), true))
                }
                Err(e) => {
                    refused = Some(e);
                    Ok((None, false))
                }
            })
            .await
            .map_err(|e| GatewayError::Internal(format!("cannot save the settings: {e}")))?;
        match (saved, refused) {
            (Some(new), _) => Ok(new),
            (None, Some(e)) => Err(e),
            (None, None) => Err(GatewayError::Internal("the settings were not saved".into())),
        }
    }
}

/// Every API that takes a body takes JSON, sent as `application/json` (415 otherwise).
/// Browsers cannot send that type to another origin without asking first, so requiring it
/// keeps web pages open on this machine from using the loopback-only APIs (a form post,
/// or curl's `-d` without a content type, is refused rather than read as JSON).
pub fn require_json(headers: &axum::http::HeaderMap) -> Result<(), GatewayError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if json {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

/// An endpoint as `GET /admin/endpoints` and `inferlog endpoints` show it: where it forwards
/// to, and its live capture and traffic settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    pub name: String,
    pub targets: Vec<UpstreamView>,
    pub shadow: Option<UpstreamView>,
    pub capture: CaptureState,
    pub traffic: TrafficState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamView {
    pub name: String,
    pub upstream: String,
    pub model_version: String,
}

impl EndpointView {
    pub fn new(settings: &inferlog_core::EndpointSettings, capture: CaptureState, traffic: TrafficState) -> Self {
        EndpointView {
            name: settings.name.clone(),
            targets: settings
                .targets
                .iter()
                .map(|t| UpstreamView { name: t.name.clone(), upstream: t.upstream.to_string(), model_version: t.model_version.clone() })
                .collect(),
            shadow: settings.shadow.as_ref().map(|s| UpstreamView {
                name: s.name.clone(),
                upstream: s.upstream.to_string(),
                model_version: s.model_version.clone(),
            }),
            capture,
            traffic,
        }
    }
}

/// `GET /admin/endpoints`: the endpoints the caller may read (all without authentication),
/// by name.
pub(crate) async fn list_endpoints(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Vec<EndpointView>>, GatewayError> {
    let caller = gw.auth.authorize(peer, &headers, None, crate::auth::Role::Read).await?;
    let mut views: Vec<EndpointView> = gw
        .endpoints()
        .filter(|e| caller.may(&e.settings.name, crate::auth::Role::Read))
        .map(|e| {
            let capture = *e.state.read().expect("capture state lock");
            let traffic = e.traffic.read().expect("traffic lock").clone();
            EndpointView::new(&e.settings, capture, traffic)
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(views))
}

pub(crate) async fn get_capture(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<CaptureState>, GatewayError> {
    gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Read).await?;
    let endpoint = gw.endpoint(&name).ok_or(GatewayError::EndpointNotFound(name))?;
    let state = *endpoint.state.read().expect("capture state lock");
    Ok(Json(state))
}

pub(crate) async fn put_capture(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<CaptureState>, GatewayError> {
    let caller = gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Owner).await?;
    let result = match require_json(&headers) {
        Ok(()) => change_capture(&gw, &name, &body).await,
        Err(e) => Err(e),
    };
    gw.audit(&caller, "capture.change", Some(&name), &body, &result);
    result.map(Json)
}

async fn change_capture(gw: &Arc<Gateway>, name: &str, body: &[u8]) -> Result<CaptureState, GatewayError> {
    let endpoint = gw.endpoint(name).ok_or_else(|| GatewayError::EndpointNotFound(name.to_string()))?;
    let change: CaptureChange = serde_json::from_slice(body)
        .map_err(|e| GatewayError::BadAdminRequest(format!("invalid capture settings: {e}")))?;
    if let Some(f) = change.sampling_fraction {
        if !(0.0..=1.0).contains(&f) {
            return Err(GatewayError::BadAdminRequest(format!(
                "sampling_fraction {f} is not between 0 and 1"
            )));
        }
    }
    // The shared state is written before the new state takes effect here; other gateways
    // take it from there. Fields the change leaves out keep their saved (else live) values.
    let _applying = gw.state_store.applying.lock().await;
    let live = *endpoint.state.read().expect("capture state lock");
    let new_state = gw
        .state_store
        .change(name, |saved| {
            let mut state = saved.unwrap_or(live);
            if let Some(e) = change.enabled {
                state.enabled = e;
            }
            if let Some(f) = change.sampling_fraction {
                state.sampling_fraction = f;
            }
            Ok(state)
        })
        .await?;
    *endpoint.state.write().expect("capture state lock") = new_state;
    tracing::info!(endpoint = %name, enabled = new_state.enabled, sampling_fraction = new_state.sampling_fraction, "capture settings changed");
    Ok(new_state)
}

pub(crate) async fn get_traffic(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<TrafficState>, GatewayError> {
    gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Read).await?;
    let endpoint = gw.endpoint(&name).ok_or(GatewayError::EndpointNotFound(name))?;
    let state = endpoint.traffic.read().expect("traffic lock").clone();
    Ok(Json(state))
}

pub(crate) async fn put_traffic(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<TrafficState>, GatewayError> {
    let caller = gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Owner).await?;
    let result = match require_json(&headers) {
        Ok(()) => change_traffic(&gw, &name, &body).await,
        Err(e) => Err(e),
    };
    gw.audit(&caller, "traffic.change", Some(&name), &body, &result);
    result.map(Json)
}

async fn change_traffic(gw: &Arc<Gateway>, name: &str, body: &[u8]) -> Result<TrafficState, GatewayError> {
    let endpoint = gw.endpoint(name).ok_or_else(|| GatewayError::EndpointNotFound(name.to_string()))?;
    let bad = |m: String| GatewayError::BadAdminRequest(m);
    let change: TrafficChange =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid traffic settings: {e}")))?;
    for target in change.weights.iter().flat_map(|w| w.keys()) {
        if !endpoint.settings.targets.iter().any(|t| &t.name == target) {
            return Err(bad(format!("endpoint `{name}` has no target `{target}`")));
        }
    }
    if let Some(f) = change.shadow_fraction {
        if !(0.0..=1.0).contains(&f) {
            return Err(bad(format!("shadow_fraction {f} is not between 0 and 1")));
        }
        if endpoint.settings.shadow.is_none() {
            return Err(bad(format!("endpoint `{name}` has no shadow")));
        }
    }
    let _applying = gw.traffic_store.applying.lock().await;
    let changes = gw
        .traffic_store
        .change(name, |saved| {
            let changes = saved.unwrap_or_default().then(change.clone());
            if changes.changed_weights(&endpoint.settings).values().all(|w| *w == 0) {
                return Err(bad("at least one target needs a weight above 0".into()));
            }
            Ok(changes)
        })
        .await?;
    let new_state = changes.apply(&endpoint.settings);
    *endpoint.traffic.write().expect("traffic lock") = new_state.clone();
    tracing::info!(endpoint = %name, weights = ?new_state.weights, shadow_fraction = new_state.shadow_fraction, "traffic settings changed");
    Ok(new_state)
}

/// One token's role on an endpoint, as the grants API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GrantView {
    pub token: String,
    /// The endpoint, or `*` for a grant on every endpoint.
    pub endpoint: String,
    pub role: crate::auth::Role,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantChange {
    role: crate::auth::Role,
}

/// Who holds which role on the endpoint: its own grants and those on `*`.
pub(crate) async fn get_grants(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Vec<GrantView>>, GatewayError> {
    gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Owner).await?;
    gw.endpoint(&name).ok_or_else(|| GatewayError::EndpointNotFound(name.clone()))?;
    let tokens = gw.auth.store().list().await.map_err(GatewayError::Internal)?;
    let grants = tokens
        .iter()
        .flat_map(|t| {
            t.grants
                .iter()
                .filter(|g| g.endpoint == name || g.endpoint == crate::auth::ANY_ENDPOINT)
                .map(|g| GrantView { token: t.name.clone(), endpoint: g.endpoint.clone(), role: g.role })
        })
        .collect();
    Ok(Json(grants))
}

/// `PUT /admin/endpoints/{name}/grants/{token}` with `{"role": "read"}`.
pub(crate) async fn put_grant(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((name, token)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<GrantView>, GatewayError> {
    let caller = gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Owner).await?;
    let change = require_json(&headers).and_then(|()| {
        serde_json::from_slice::<GrantChange>(&body).map_err(|e| {
            GatewayError::BadAdminRequest(format!("invalid grant (send {{\"role\": \"invoke|read|owner\"}}): {e}"))
        })
    });
    let result = match change {
        Ok(change) => change_grant(&gw, &name, &token, Some(change.role))
            .await
            .map(|()| GrantView { token: token.clone(), endpoint: name.clone(), role: change.role }),
        Err(e) => Err(e),
    };
    gw.audit(&caller, "grant", Some(&name), format!("token={token} {}", String::from_utf8_lossy(&body)).as_bytes(), &result);
    result.map(Json)
}

/// `DELETE /admin/endpoints/{name}/grants/{token}`: the token keeps any grant on `*`.
pub(crate) async fn delete_grant(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((name, token)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<axum::http::StatusCode, GatewayError> {
    let caller = gw.auth.authorize(peer, &headers, Some(&name), crate::auth::Role::Owner).await?;
    let result = change_grant(&gw, &name, &token, None).await;
    gw.audit(&caller, "ungrant", Some(&name), format!("token={token}").as_bytes(), &result);
    result.map(|_| axum::http::StatusCode::NO_CONTENT)
}

/// Sets (`Some(role)`) or removes (`None`) the token's role on the endpoint.
async fn change_grant(gw: &Arc<Gateway>, name: &str, token: &str, role: Option<crate::auth::Role>) -> Result<(), GatewayError> {
    gw.endpoint(name).ok_or_else(|| GatewayError::EndpointNotFound(name.to_string()))?;
    // Some(true): done; Some(false): the token held no role there; None: no such token.
    let outcome = match role {
        Some(role) => gw.auth.store().grant(token, name, role).await.map(|t| t.map(|_| true)),
        None => gw.auth.store().ungrant(token, name).await,
    }
    .map_err(GatewayError::Internal)?;
    gw.auth.reload().await;
    match outcome {
        None => Err(GatewayError::TokenNotFound(token.to_string())),
        Some(false) => Err(GatewayError::GrantNotFound { token: token.to_string(), endpoint: name.to_string() }),
        Some(true) => {
            // The token's name stays out of the log, as in records and the audit table.
            tracing::info!(endpoint = %name, role = ?role, "grant changed");
            Ok(())
        }
    }
}

/// How often a gateway looks for control-state changes made elsewhere (another gateway's
/// admin API, the CLI): well within the fleet's 2 s.
pub const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// What a poll last saw of each document.
#[derive(Default)]
struct Seen {
    capture: Option<String>,
    traffic: Option<String>,
}

impl Gateway {
    /// Applies the shared control state (capture toggles, traffic, tokens) as other gateways
    /// and the CLI change it, every `every` until `stop` or until the gateway is gone. While
    /// the state cannot be read the settings known so far stay in force; that is said once,
    /// and once when it recovers. Holds the gateway only while applying: its capture handles
    /// must be able to go for the log writers to drain at shutdown.
    pub async fn follow_shared_state(gateway: std::sync::Weak<Self>, every: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut seen = Seen::default();
        let mut failing = false;
        loop {
            let Some(gw) = gateway.upgrade() else { return };
            // A store that hangs must not keep the gateway (and its capture handles) past stop.
            let followed = tokio::select! {
                followed = gw.follow_once(&mut seen) => followed,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            drop(gw);
            match followed {
                Ok(()) if failing => {
                    tracing::info!("the shared control state can be read again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read the shared control state; the settings known so far stay in force");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Each document on its own: one that cannot be read or parsed holds up none of the others.
    async fn follow_once(&self, seen: &mut Seen) -> Result<(), String> {
        let errors: Vec<String> = [self.follow_capture(seen).await, self.follow_traffic(seen).await, self.auth.poll().await.map(|_| ())]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn follow_capture(&self, seen: &mut Seen) -> Result<(), String> {
        {
            let _applying = self.state_store.applying.lock().await;
            if let Some((saved, version)) = self.state_store.changed_since(seen.capture.as_deref()).await? {
                for endpoint in self.endpoints() {
                    let settings = &endpoint.settings;
                    let new = saved.get(&settings.name).copied().unwrap_or(CaptureState {
                        enabled: settings.capture.enabled,
                        sampling_fraction: settings.capture.sampling_fraction,
                    });
                    let mut state = endpoint.state.write().expect("capture state lock");
                    if *state != new {
                        *state = new;
                        tracing::info!(endpoint = %settings.name, enabled = new.enabled, sampling_fraction = new.sampling_fraction,
                            "capture settings changed elsewhere in the fleet");
                    }
                }
                seen.capture = version;
            }
        }
        Ok(())
    }

    async fn follow_traffic(&self, seen: &mut Seen) -> Result<(), String> {
        {
            let _applying = self.traffic_store.applying.lock().await;
            if let Some((saved, version)) = self.traffic_store.changed_since(seen.traffic.as_deref()).await? {
                for endpoint in self.endpoints() {
                    let settings = &endpoint.settings;
                    let new = saved.get(&settings.name).cloned().unwrap_or_default().apply(settings);
                    let mut state = endpoint.traffic.write().expect("traffic lock");
                    if *state != new {
                        tracing::info!(endpoint = %settings.name, weights = ?new.weights, shadow_fraction = new.shadow_fraction,
                            "traffic settings changed elsewhere in the fleet");
                        *state = new;
                    }
                }
                seen.traffic = version;
            }
        }
        Ok(())
    }
}
