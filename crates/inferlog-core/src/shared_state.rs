//! The control state: small JSON documents (capture toggles, traffic, tokens and grants)
//! that every gateway of a fleet reads and any of them, or the CLI, may change.
//!
//! Where they live is the [`Layout`](crate::Layout)'s choice: beside tables on object
//! storage, `{tables_uri}/_inferlog/state/{name}.json`; with local tables, in the one
//! gateway's `{data_dir}/state/{name}.json`. Invariants:
//! - A document is only ever replaced conditionally: read with its version (the store's ETag,
//!   or a digest of the local file), changed, written back only if the version is still the
//!   one read (`If-Match`, `If-None-Match: *` for a new one; a file lock locally). A writer
//!   that lost the race reads again and reapplies its change, so two concurrent changes never
//!   lose one another.
//! - Readers poll: [`SharedState::read_if_changed`] costs one conditional GET (a `304` when
//!   nothing changed), so every gateway sees a change within its poll interval.

use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, PutMode, PutOptions, UpdateVersion};
use serde::{de::DeserializeOwned, Serialize};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The capture toggles and sampling of every endpoint changed at runtime.
pub const CAPTURE: &str = "capture";
/// Target weights and shadow shares changed at runtime.
pub const TRAFFIC: &str = "traffic";
/// Tokens (digests of their secrets) and their grants.
pub const TOKENS: &str = "tokens";


/// How long one read or write of the store may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Conditional writes lost to other writers before a change gives up.
const MAX_ATTEMPTS: u32 = 50;

/// One document as read: its bytes and the version a conditional write must name.
#[derive(Debug, Clone)]
pub struct Document {
    pub bytes: Vec<u8>,
    pub version: String,
}

/// What a poll found.
#[derive(Debug)]
pub enum Fresh {
    Unchanged,
    /// The document now (`None`: there is none).
    Changed(Option<Document>),
}

#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    Store { store: Arc<dyn ObjectStore>, prefix: String, root: String },
}

/// The control state of one fleet (or of one gateway with local tables). Cheap to clone.
#[derive(Clone)]
pub struct SharedState {
    backend: Backend,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState").field("at", &self.location("*")).finish()
    }
}

/// A digest of a local document's bytes: its version.
fn digest(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}-{}", h.finish(), bytes.len())
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = Result<T, object_store::Error>>) -> Result<T, String> {
    match tokio::time::timeout(STORE_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{what}: no answer within {} s", STORE_TIMEOUT.as_secs())),
    }
}

impl SharedState {
    /// Documents in a local folder (`{data_dir}/state`).
    pub fn local(dir: PathBuf) -> SharedState {
        SharedState { backend: Backend::Local(dir) }
    }

    /// Documents under `{root}/_inferlog/state/` of an object store rooted at the tables root
    /// (`root` names it in messages).
    pub fn in_store(store: Arc<dyn ObjectStore>, root: &str) -> SharedState {
        SharedState { backend: Backend::Store { store, prefix: crate::layout::STORE_STATE_PREFIX.to_string(), root: root.trim_end_matches('/').to_string() } }
    }

    /// Where the document `name` is, for messages.
    pub fn location(&self, name: &str) -> String {
        match &self.backend {
            Backend::Local(dir) => dir.join(format!("{name}.json")).display().to_string(),
            Backend::Store { prefix, root, .. } => format!("{root}/{prefix}/{name}.json"),
        }
    }

    fn store_path(prefix: &str, name: &str) -> StorePath {
        StorePath::from(format!("{prefix}/{name}.json"))
    }

    /// The document `name`, if there is one.
    pub async fn read(&self, name: &str) -> Result<Option<Document>, String> {
        match self.read_if_changed(name, None).await? {
            Fresh::Changed(doc) => Ok(doc),
            Fresh::Unchanged => Ok(None),
        }
    }

    /// The document `name` unless its version is still `known`.
    pub async fn read_if_changed(&self, name: &str, known: Option<&str>) -> Result<Fresh, String> {
        let found = match &self.backend {
            Backend::Local(dir) => {
                let path = dir.join(format!("{name}.json"));
                let read = tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|e| e.to_string())?;
                match read {
                    Ok(bytes) => Some(Document { version: digest(&bytes), bytes }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("cannot read {}: {e}", self.location(name))),
                }
            }
            Backend::Store { store, prefix, .. } => {
                let path = Self::store_path(prefix, name);
                let options = GetOptions { if_none_match: known.map(str::to_string), ..Default::default() };
                let got = timed("read", async {
                    match store.get_opts(&path, options).await {
                        Ok(r) => {
                            // Conditional writes name the ETag; a store without one is refused.
                            let Some(version) = r.meta.e_tag.clone() else {
                                return Err(object_store::Error::NotSupported { source: "the store returns no ETag, which conditional writes need".into() });
                            };
                            Ok(Some(Some(Document { bytes: r.bytes().await?.to_vec(), version })))
                        }
                        Err(object_store::Error::NotFound { .. }) => Ok(Some(None)),
                        // Some stores answer a matching If-None-Match with 412 rather than 304.
                        Err(object_store::Error::NotModified { .. } | object_store::Error::Precondition { .. }) if known.is_some() => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .await
                .map_err(|e| format!("cannot read {}: {e}", self.location(name)))?;
                match got {
                    None => return Ok(Fresh::Unchanged),
                    Some(doc) => doc,
                }
            }
        };
        let same = match (&found, known) {
            (Some(doc), Some(known)) => doc.version == known,
            (None, None) => true,
            _ => false,
        };
        Ok(if same { Fresh::Unchanged } else { Fresh::Changed(found) })
    }

    /// Writes `bytes` as the document `name` unless there is one already; whether it did.
    /// (Local documents are already where they are read.)
    pub async fn create_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<bool, String> {
        let Backend::Store { store, prefix, .. } = &self.backend else { return Ok(false) };
        let path = Self::store_path(prefix, name);
        let put = store.put_opts(&path, bytes.into(), PutOptions { mode: PutMode::Create, ..Default::default() });
        match tokio::time::timeout(STORE_TIMEOUT, put).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => Ok(false),
            Ok(Err(e)) => Err(format!("cannot write {}: {e}", self.location(name))),
            Err(_) => Err(format!("cannot write {}: no answer within {} s", self.location(name), STORE_TIMEOUT.as_secs())),
        }
    }

    /// The document `name` parsed as `T` (`T::default()` when there is none).
    pub async fn load<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, String> {
        match self.read(name).await? {
            Some(doc) => parse(&doc.bytes).map_err(|e| format!("{} is not valid: {e}", self.location(name))),
            None => Ok(T::default()),
        }
    }

    /// Changes the document `name`: `change` gets its current value (`T::default()` when there
    /// is none) and returns its result and whether it changed anything. Applied again to the
    /// newer value when another writer got there first; nothing is written when nothing changed.
    pub async fn modify<T, R>(&self, name: &str, mut change: impl FnMut(&mut T) -> Result<(R, bool), String>) -> Result<R, String>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        match &self.backend {
            Backend::Local(dir) => {
                // One writer at a time, across processes: an exclusive lock beside the file.
                let (dir, owned) = (dir.clone(), name.to_string());
                let location = self.location(name);
                let lock = tokio::task::spawn_blocking(move || lock_local(&dir, &owned)).await.map_err(|e| e.to_string())??;
                let mut value: T = match self.read(name).await? {
                    Some(doc) => parse(&doc.bytes).map_err(|e| format!("{location} is not valid: {e}"))?,
                    None => T::default(),
                };
                let (result, changed) = change(&mut value)?;
                if changed {
                    let bytes = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || lock.write(&bytes))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("cannot write {location}: {e}"))?;
                }
                Ok(result)
            }
            Backend::Store { store, prefix, .. } => {
                let path = Self::store_path(prefix, name);
                for attempt in 0..MAX_ATTEMPTS {
                    let (mut value, mode) = match self.read(name).await? {
                        Some(doc) => {
                            let value: T = parse(&doc.bytes).map_err(|e| format!("{} is not valid: {e}", self.location(name)))?;
                            (value, PutMode::Update(UpdateVersion { e_tag: Some(doc.version), version: None }))
                        }
                        None => (T::default(), PutMode::Create),
                    };
                    let (result, changed) = change(&mut value)?;
                    if !changed {
                        return Ok(result);
                    }
                    let written = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
                    let put = store.put_opts(&path, written.clone().into(), PutOptions { mode, ..Default::default() });
                    match tokio::time::timeout(STORE_TIMEOUT, put).await {
                        Ok(Ok(_)) => return Ok(result),
                        // Another writer changed it since it was read: read it again.
                        Ok(Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. })) => {
                            let jitter = rand::random_range(5..25u64) * u64::from(attempt + 1).min(8);
                            tokio::time::sleep(Duration::from_millis(jitter)).await;
                        }
                        Ok(Err(e)) => return Err(format!("cannot write {}: {e}", self.location(name))),
                        Err(_) => {
                            // The write may have landed without its answer: if the document
                            // is now what was written, the change is in.
                            if self.read(name).await.ok().flatten().is_some_and(|doc| doc.bytes == written) {
                                return Ok(result);
                            }
                            return Err(format!("cannot write {}: no answer within {} s", self.location(name), STORE_TIMEOUT.as_secs()));
                        }
                    }
                }
                Err(format!("cannot write {}: {MAX_ATTEMPTS} other writers changed it first", self.location(name)))
            }
        }
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// A held lock on a local document, released when dropped.
struct LocalLock {
    path: PathBuf,
    _lock: std::fs::File,
}

fn lock_local(dir: &std::path::Path, name: &str) -> Result<LocalLock, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    Ok(LocalLock { path: dir.join(format!("{name}.json")), _lock: lock })
}

impl LocalLock {
    /// Replaces the document atomically. Tokens are digests of secrets: the file is readable
    /// by its owner only, whatever the umask.
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    async fn concurrent_changes_are_all_kept(state: SharedState) {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let state = state.clone();
                tokio::spawn(async move {
                    state
                        .modify::<BTreeMap<String, u32>, _>("counts", |m| {
                            m.insert(format!("writer-{i}"), i);
                            Ok(((), true))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let all: BTreeMap<String, u32> = state.load("counts").await.unwrap();
        assert_eq!(all.len(), 8, "{all:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_local_changes_never_lose_one_another() {
        let dir = tempfile::tempdir().unwrap();
        concurrent_changes_are_all_kept(SharedState::local(dir.path().to_path_buf())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_store_changes_never_lose_one_another() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        concurrent_changes_are_all_kept(SharedState::in_store(store, "memory://")).await;
    }

    #[tokio::test]
    async fn a_poll_sees_a_change_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let state = SharedState::in_store(store, "memory://");
        assert!(matches!(state.read_if_changed(CAPTURE, None).await.unwrap(), Fresh::Unchanged));
        state.modify::<BTreeMap<String, bool>, _>(CAPTURE, |m| Ok(((), m.insert("m".into(), false).is_none()))).await.unwrap();
        let Fresh::Changed(Some(doc)) = state.read_if_changed(CAPTURE, None).await.unwrap() else { panic!("changed") };
        assert!(matches!(state.read_if_changed(CAPTURE, Some(&doc.version)).await.unwrap(), Fresh::Unchanged));
        // A change that changes nothing writes nothing.
        state.modify::<BTreeMap<String, bool>, _>(CAPTURE, |_| Ok(((), false))).await.unwrap();
        assert!(matches!(state.read_if_changed(CAPTURE, Some(&doc.version)).await.unwrap(), Fresh::Unchanged));
    }

    #[tokio::test]
    async fn an_invalid_document_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokens.json"), b"{not json").unwrap();
        let state = SharedState::local(dir.path().to_path_buf());
        let err = state.load::<BTreeMap<String, u32>>(TOKENS).await.unwrap_err();
        assert!(err.contains("tokens.json is not valid"), "{err}");
    }
}
