//! The fleet: the gateways sharing a tables root, as each reports itself, and who holds each
//! lease. Every gateway writes its own report, `{tables_uri}/_inferlog/gateways/{id}.json`,
//! every [`HEARTBEAT_EVERY`]; nobody else writes it, so plain puts suffice. A gateway whose
//! report is older than [`SEEN_RECENTLY`] is no longer listed.

use crate::lease::{lease_holders, LeaseHolder};
pub use crate::lease::now_ms;
use deltalake::logstore::object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt as _, PutPayload};
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;
use inferlog_core::layout::STORE_GATEWAYS_PREFIX as GATEWAYS;

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
pub const SEEN_RECENTLY: Duration = Duration::from_secs(60);

/// What a gateway says of itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GatewayReport {
    /// Its instance id (the holder named in leases, the writer of its application transactions).
    pub id: String,
    /// Its `gateway_name`, else its id: what rows name in `gateway_id`.
    pub name: String,
    pub version: String,
    pub heartbeat_ms: u64,
    pub endpoints: Vec<EndpointProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointProgress {
    pub endpoint: String,
    /// Seconds since its last commit; null before the first.
    pub commit_lag_seconds: Option<f64>,
    /// Records in its log not yet in the table.
    pub records_in_log: u64,
}

/// `GET /admin/fleet` and `inferlog fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    pub gateways: Vec<GatewaySeen>,
    pub leases: Vec<LeaseView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewaySeen {
    #[serde(flatten)]
    pub report: GatewayReport,
    pub seconds_since_heartbeat: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    pub lease: String,
    /// The holder's name; null when the lease has expired (nobody holds it).
    pub holder: Option<String>,
    pub expires_in_seconds: f64,
}

/// Writes this gateway's report every [`HEARTBEAT_EVERY`] until `stop`; failures (the store
/// down) are retried at the next beat and never stop the gateway.
pub async fn heartbeat(root: Url, report: impl Fn() -> GatewayReport, mut stop: watch::Receiver<bool>) {
    let Ok(store) = crate::table::root_store(&root) else { return };
    loop {
        let current = report();
        let path = StorePath::from(format!("{GATEWAYS}/{}.json", current.id));
        let body = PutPayload::from(serde_json::to_vec(&current).expect("a report serializes"));
        if let Ok(Err(e)) = tokio::time::timeout(HEARTBEAT_EVERY, store.put(&path, body)).await {
            tracing::debug!(error = %e, "cannot write the gateway's heartbeat");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// The gateways seen within [`SEEN_RECENTLY`] (by name) and the leases (by name).
pub async fn read_fleet(root: &Url) -> Result<FleetView, String> {
    let store = crate::table::root_store(root)?;
    let now = now_ms();
    let prefix = StorePath::from(GATEWAYS);
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(|e| e.to_string())?;
    let mut gateways = Vec::new();
    for object in objects {
        let Ok(found) = store.get(&object.location).await else { continue };
        let Ok(bytes) = found.bytes().await else { continue };
        let Ok(report) = serde_json::from_slice::<GatewayReport>(&bytes) else { continue };
        let age_ms = now.saturating_sub(report.heartbeat_ms);
        if age_ms <= SEEN_RECENTLY.as_millis() as u64 {
            gateways.push(GatewaySeen { report, seconds_since_heartbeat: age_ms as f64 / 1000.0 });
        }
    }
    gateways.sort_by(|a, b| a.report.name.cmp(&b.report.name));
    let name_of = |id: &str| gateways.iter().find(|g| g.report.id == id).map_or_else(|| id.to_string(), |g| g.report.name.clone());
    let mut leases: Vec<LeaseView> = lease_holders(store.as_ref())
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|LeaseHolder { lease, holder, expires_at_ms }| LeaseView {
            holder: (expires_at_ms > now).then(|| name_of(&holder)),
            expires_in_seconds: expires_at_ms.saturating_sub(now) as f64 / 1000.0,
            lease,
        })
        .collect();
    leases.sort_by(|a, b| a.lease.cmp(&b.lease));
    Ok(FleetView { gateways, leases })
}
