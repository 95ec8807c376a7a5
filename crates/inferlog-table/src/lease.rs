//! Leases: the work that must run on one gateway at a time (compaction, unpacking, scheduled
//! monitoring, retention of an endpoint) runs where its lease is held.
//!
//! A lease is one small JSON object, `{tables_uri}/_inferlog/leases/{name}.json`, holding
//! `{"holder": …, "expires_at_ms": …}`. Invariants:
//! - It is only ever written conditionally: created with `If-None-Match: *`, then replaced with
//!   `If-Match: <the ETag read>`. Of two gateways racing for it, the store lets exactly one win.
//! - Its holder renews it every third of its time to live; a holder that cannot renew (store
//!   down, lost race) stops counting itself the holder at once, so at most one gateway believes
//!   it holds a lease while the store answers, and one that stopped renewing is replaced within
//!   the time to live. (Expiry compares the writers' clocks: keep them in NTP sync.)
//! - Local tables need no lease: one gateway owns its data dir and its tables, so the lease is
//!   always held.

use deltalake::logstore::object_store::{self, path::Path as StorePath, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use url::Url;
use inferlog_core::layout::STORE_LEASES_PREFIX as LEASES;

/// Default time to live: a dead holder is replaced within this.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Whether this gateway holds a lease now; cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct LeaseFlag(Arc<AtomicBool>);

impl LeaseFlag {
    /// Held for good: work on local tables.
    pub fn always() -> LeaseFlag {
        LeaseFlag(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_held(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A flag set by hand, for tests of the work it guards.
    #[cfg(test)]
    pub(crate) fn manual(held: bool) -> (Arc<AtomicBool>, LeaseFlag) {
        let flag = Arc::new(AtomicBool::new(held));
        (flag.clone(), LeaseFlag(flag))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    holder: String,
    expires_at_ms: u64,
}

/// Keeps trying to hold, and once held renews, one lease.
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub ttl: Duration,
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    held: LeaseFlag,
}

/// Wall-clock Unix time in milliseconds: lease expiries and heartbeats compare it across gateways.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The lease at `path` (its body, `None` if unreadable) with the version a conditional
/// replace must name; `None` when there is no such object.
async fn read_lease(store: &dyn ObjectStore, path: &StorePath) -> Result<Option<(Option<LeaseBody>, UpdateVersion)>, object_store::Error> {
    let found = match store.get(path).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        other => other?,
    };
    let version = UpdateVersion { e_tag: found.meta.e_tag.clone(), version: found.meta.version.clone() };
    Ok(Some((serde_json::from_slice(&found.bytes().await?).ok(), version)))
}

impl Lease {
    /// The lease `name` under the tables root `root`, for `holder`; not held until [`Lease::run`]
    /// (or [`Lease::try_hold`]) wins it.
    pub fn new(root: &Url, name: &str, holder: &str, ttl: Duration) -> Result<Lease, String> {
        let store = crate::table::root_store(root)?;
        Ok(Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl,
            store,
            path: StorePath::from(format!("{LEASES}/{name}.json")),
            held: LeaseFlag(Arc::new(AtomicBool::new(false))),
        })
    }

    pub fn flag(&self) -> LeaseFlag {
        self.held.clone()
    }

    /// One attempt to take or renew the lease; returns whether it is held now.
    pub async fn try_hold(&self) -> Result<bool, object_store::Error> {
        let mode = match read_lease(self.store.as_ref(), &self.path).await? {
            None => PutMode::Create,
            Some((current, version)) => {
                let ours = current.as_ref().is_some_and(|c| c.holder == self.holder);
                let expired = current.as_ref().is_none_or(|c| c.expires_at_ms <= now_ms());
                if !ours && !expired {
                    return Ok(false);
                }
                PutMode::Update(version)
            }
        };
        match self.write(now_ms() + self.ttl.as_millis() as u64, mode).await {
            Ok(_) => Ok(true),
            // Another gateway wrote it first.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes the lease as ours until `expires_at_ms`, conditionally on `mode`.
    async fn write(&self, expires_at_ms: u64, mode: PutMode) -> Result<(), object_store::Error> {
        let body = serde_json::to_vec(&LeaseBody { holder: self.holder.clone(), expires_at_ms }).expect("a lease serializes");
        self.store.put_opts(&self.path, body.into(), PutOptions { mode, ..Default::default() }).await.map(|_| ())
    }

    /// Renews the lease every third of its time to live until `stop`; gives it up (expires it,
    /// if still ours) at the end so another gateway takes over at once.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let gauge = metrics::gauge!("inferlog_lease_held", "lease" => self.name.clone());
        let every = self.ttl / 3;
        let mut failing = false;
        loop {
            // A store that hangs counts as one that fails: the lease is not held meanwhile.
            let attempt = tokio::time::timeout(every, self.try_hold()).await.unwrap_or_else(|_| {
                Err(object_store::Error::Generic { store: "lease", source: format!("no answer within {} ms", every.as_millis()).into() })
            });
            let held = match attempt {
                Ok(held) => {
                    if failing {
                        tracing::info!(lease = %self.name, "the lease store answers again");
                        failing = false;
                    }
                    held
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease; its work stops here until the store answers");
                        failing = true;
                    }
                    false
                }
            };
            let was = self.held.0.swap(held, Ordering::AcqRel);
            if held != was {
                tracing::info!(lease = %self.name, holder = %self.holder, held, "lease changed hands");
            }
            gauge.set(if held { 1.0 } else { 0.0 });
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        if self.held.0.swap(false, Ordering::AcqRel) {
            self.release().await;
        }
        gauge.set(0.0);
    }

    /// Lets the lease go early: expires it now, if it is still ours.
    async fn release(&self) {
        if let Ok(Some((Some(current), version))) = read_lease(self.store.as_ref(), &self.path).await {
            if current.holder == self.holder {
                let _ = self.write(0, PutMode::Update(version)).await;
            }
        }
    }
}

/// A lease as the store holds it.
pub struct LeaseHolder {
    pub lease: String,
    pub holder: String,
    pub expires_at_ms: u64,
}

/// Every lease under a tables root's store, with its holder and expiry.
pub(crate) async fn lease_holders(store: &dyn ObjectStore) -> Result<Vec<LeaseHolder>, object_store::Error> {
    use futures::TryStreamExt as _;
    let objects: Vec<_> = store.list(Some(&StorePath::from(LEASES))).try_collect().await?;
    let mut out = Vec::new();
    for object in objects {
        let Some(lease) = object.location.filename().and_then(|f| f.strip_suffix(".json")).map(str::to_string) else { continue };
        if let Some((Some(body), _)) = read_lease(store, &object.location).await? {
            out.push(LeaseHolder { lease, holder: body.holder, expires_at_ms: body.expires_at_ms });
        }
    }
    Ok(out)
}
