//! The admin API: read and change an endpoint's capture settings and its traffic (target
//! weights, shadow share) at runtime. Changes are saved under `{data_dir}/state/capture.json`
//! and `traffic.json` and win over the config file on restart. Until authentication exists
//! without authentication the admin API answers loopback clients only (see [`crate::auth`]).

use crate::error::GatewayError;
use crate::forward::Gateway;
use crate::tls::ClientAddr;
use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
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

/// Saved runtime settings, one per endpoint, in one JSON file replaced atomically.
pub struct StateStore<T> {
    path: PathBuf,
    /// Serialises admin changes end to end (read, save, swap).
    pub(crate) changes: tokio::sync::Mutex<()>,
    _kind: std::marker::PhantomData<T>,
}

pub type CaptureStateStore = StateStore<CaptureState>;
pub type TrafficStateStore = StateStore<TrafficChange>;

impl<T: Serialize + serde::de::DeserializeOwned> StateStore<T> {
    pub fn new(path: PathBuf) -> Self {
        StateStore { path, changes: tokio::sync::Mutex::new(()), _kind: std::marker::PhantomData }
    }

    pub fn load(&self) -> std::io::Result<BTreeMap<String, T>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not valid saved state: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, endpoint: &str, state: T) -> std::io::Result<()> {
        let mut all = self.load()?;
        all.insert(endpoint.to_string(), state);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&all)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
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
    // One change at a time; the file is written before the new state takes effect, and the
    // lock that request sampling reads is held only for the swap.
    let _one_at_a_time = gw.state_store.changes.lock().await;
    let mut new_state = *endpoint.state.read().expect("capture state lock");
    if let Some(e) = change.enabled {
        new_state.enabled = e;
    }
    if let Some(f) = change.sampling_fraction {
        new_state.sampling_fraction = f;
    }
    let store = gw.clone();
    let saved_name = name.to_string();
    save_blocking(move || store.state_store.save(&saved_name, new_state)).await?;
    *endpoint.state.write().expect("capture state lock") = new_state;
    tracing::info!(endpoint = %name, enabled = new_state.enabled, sampling_fraction = new_state.sampling_fraction, "capture settings changed");
    Ok(new_state)
}

/// Runs a state file write off the runtime's threads.
async fn save_blocking(save: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), GatewayError> {
    tokio::task::spawn_blocking(save)
        .await
        .map_err(|e| GatewayError::Internal(format!("cannot save the settings: {e}")))?
        .map_err(|e| GatewayError::Internal(format!("cannot save the settings: {e}")))
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
    let _one_at_a_time = gw.traffic_store.changes.lock().await;
    let saved = gw.traffic_store.load().map_err(|e| GatewayError::Internal(e.to_string()))?;
    let changes = saved.get(name).cloned().unwrap_or_default().then(change);
    if changes.changed_weights(&endpoint.settings).values().all(|w| *w == 0) {
        return Err(bad("at least one target needs a weight above 0".into()));
    }
    let new_state = changes.apply(&endpoint.settings);
    let store = gw.clone();
    let saved_name = name.to_string();
    save_blocking(move || store.traffic_store.save(&saved_name, changes)).await?;
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
    let tokens = gw.auth.store().list().map_err(|e| GatewayError::Internal(e.to_string()))?;
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
    let (auth, endpoint, holder) = (gw.auth.clone(), name.to_string(), token.to_string());
    // Some(true): done; Some(false): the token held no role there; None: no such token.
    let outcome = tokio::task::spawn_blocking(move || match role {
        Some(role) => auth.store().grant(&holder, &endpoint, role).map(|t| t.map(|_| true)),
        None => auth.store().ungrant(&holder, &endpoint),
    })
    .await
    .map_err(|e| GatewayError::Internal(e.to_string()))?
    .map_err(GatewayError::Internal)?;
    gw.auth.invalidate();
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
