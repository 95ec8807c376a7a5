//! Where everything of a gateway lives: the one home of the data layout.
//!
//! Two roots. The **tables root** (`tables_uri`: `file:///…/`, `s3://bucket/prefix/`,
//! `gs://…`, `az://…`) holds every Delta table, shared by every gateway and command that
//! names it. The **data dir** is one gateway's own local disk: its write-ahead logs (serving
//! never waits on the store), its instance id and lock, and its saved state.
//!
//! ```text
//! {tables_uri}/{endpoint}_payload/        captured exchanges (and _offload/ side files)
//! {tables_uri}/{endpoint}_unpacked/       typed features and predictions
//! {tables_uri}/{endpoint}_labels/         ground truth
//! {tables_uri}/{endpoint}_profile_metrics/, _drift_metrics/, _violations/
//! {tables_uri}/_audit/                    who read and changed what
//! {tables_uri}/_inferlog/state/           control state on an object store (shared_state)
//! {tables_uri}/_inferlog/leases/, gateways/  leases and heartbeats of a fleet
//! {tables_uri}/_inferlog/monitoring/{endpoint}/  baselines and schedule, on an object store
//! {data_dir}/wal/{endpoint}/              the endpoint's write-ahead log
//! {data_dir}/offload/{endpoint}/          offloaded bodies awaiting upload (object stores)
//! {data_dir}/state/                       control state with local tables; audit rules
//! {data_dir}/monitoring/{endpoint}/       baselines and schedule with local tables
//! {data_dir}/instance.id, inferlog.lock
//! ```
//!
//! Invariant: the tables root URL always ends in `/`, so `root.join(name/)` never replaces
//! its last segment; a table's URL ends in `/` too.

use std::path::{Path, PathBuf};
use url::Url;

/// The folder under the data dir that holds the tables when no `tables_uri` is given.
pub const LOCAL_TABLES_DIR: &str = "tables";
/// The variable that sets `tables_uri`, as the config key and `--tables-uri` do.
pub const TABLES_URI_ENV: &str = "INFERLOG_TABLES_URI";
/// The table of audit events, shared by all endpoints.
pub const AUDIT_TABLE: &str = "_audit";
/// What a fleet keeps beside tables on an object store, under the tables root: the control
/// state documents, endpoint leases, gateway heartbeats and monitoring files.
pub const STORE_STATE_PREFIX: &str = "_inferlog/state";
pub const STORE_LEASES_PREFIX: &str = "_inferlog/leases";
pub const STORE_GATEWAYS_PREFIX: &str = "_inferlog/gateways";
pub const STORE_MONITORING_PREFIX: &str = "_inferlog/monitoring";

/// The tables an endpoint has, by the suffix of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointTable {
    Payload,
    Unpacked,
    Labels,
    ProfileMetrics,
    DriftMetrics,
    Violations,
}

impl EndpointTable {
    pub const ALL: [EndpointTable; 6] = [
        EndpointTable::Payload,
        EndpointTable::Unpacked,
        EndpointTable::Labels,
        EndpointTable::ProfileMetrics,
        EndpointTable::DriftMetrics,
        EndpointTable::Violations,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            EndpointTable::Payload => "payload",
            EndpointTable::Unpacked => "unpacked",
            EndpointTable::Labels => "labels",
            EndpointTable::ProfileMetrics => "profile_metrics",
            EndpointTable::DriftMetrics => "drift_metrics",
            EndpointTable::Violations => "violations",
        }
    }

    /// The table's name: `{endpoint}_{suffix}`.
    pub fn name(self, endpoint: &str) -> String {
        format!("{endpoint}_{}", self.suffix())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("`{uri}` is not a URL: {reason}")]
    NotAUrl { uri: String, reason: String },
    #[error("`{uri}` {reason}")]
    Unsupported { uri: String, reason: String },
    #[error("cannot resolve the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a gateway's tables, logs and state are. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    data_dir: PathBuf,
    tables: Url,
}

impl Layout {
    /// The tables under `{data_dir}/tables`, as a single gateway keeps them.
    pub fn local(data_dir: &Path) -> Result<Layout, LayoutError> {
        Layout::new(data_dir, None)
    }

    /// `tables_uri` (a URL, or a local path) when given, else `{data_dir}/tables`.
    pub fn new(data_dir: &Path, tables_uri: Option<&str>) -> Result<Layout, LayoutError> {
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|source| LayoutError::DataDir { path: path.to_path_buf(), source })
        };
        let data_dir = absolute(data_dir)?;
        let tables = match tables_uri.map(str::trim).filter(|u| !u.is_empty()) {
            None => directory_url(&data_dir.join(LOCAL_TABLES_DIR), "")?,
            Some(uri) if !uri.contains("://") => directory_url(&absolute(Path::new(uri))?, uri)?,
            Some(uri) => {
                let mut url = Url::parse(uri).map_err(|e| LayoutError::NotAUrl { uri: uri.into(), reason: e.to_string() })?;
                match url.scheme() {
                    "file" | "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" => {}
                    other => {
                        return Err(LayoutError::Unsupported {
                            uri: uri.into(),
                            reason: format!("is not on a supported store: `{other}://` (file, s3, gs, az, abfss)"),
                        })
                    }
                }
                if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
                    return Err(LayoutError::Unsupported { uri: uri.into(), reason: "names no bucket or container".into() });
                }
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(LayoutError::Unsupported {
                        uri: uri.into(),
                        reason: "takes no query or fragment; store settings come from the environment".into(),
                    });
                }
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                url
            }
        };
        Ok(Layout { data_dir, tables })
    }

    /// The gateway's own local directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The root every table is under; ends in `/`.
    pub fn tables_root(&self) -> &Url {
        &self.tables
    }

    /// Whether the tables are on this machine's file system.
    pub fn tables_are_local(&self) -> bool {
        self.tables.scheme() == "file"
    }

    /// The URL of the table `name` (ends in `/`).
    pub fn table(&self, name: &str) -> Url {
        self.tables.join(&format!("{name}/")).expect("a table name is a relative path segment")
    }

    /// The URL of one of an endpoint's tables.
    pub fn endpoint_table(&self, endpoint: &str, table: EndpointTable) -> Url {
        self.table(&table.name(endpoint))
    }

    pub fn payload(&self, endpoint: &str) -> Url {
        self.endpoint_table(endpoint, EndpointTable::Payload)
    }

    pub fn unpacked(&self, endpoint: &str) -> Url {
        self.endpoint_table(endpoint, EndpointTable::Unpacked)
    }

    pub fn labels(&self, endpoint: &str) -> Url {
        self.endpoint_table(endpoint, EndpointTable::Labels)
    }

    pub fn audit(&self) -> Url {
        self.table(AUDIT_TABLE)
    }

    /// The folder of a table when the tables are local.
    pub fn local_table_dir(&self, name: &str) -> Option<PathBuf> {
        self.table(name).to_file_path().ok()
    }

    /// An endpoint's write-ahead log.
    pub fn wal_dir(&self, endpoint: &str) -> PathBuf {
        self.data_dir.join("wal").join(endpoint)
    }

    /// The control state (capture toggles, traffic, tokens) when the tables are local, and
    /// the audit redaction rules.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    /// Where an endpoint's offloaded bodies wait for their commit when the tables are on an
    /// object store: the log writer never waits on the network, so it writes them here and
    /// the committer uploads them beside the table before the commit that names them.
    pub fn offload_spool_dir(&self, endpoint: &str) -> PathBuf {
        self.data_dir.join("offload").join(endpoint)
    }

    /// An endpoint's baseline and monitoring schedule when the tables are local.
    pub fn monitoring_dir(&self, endpoint: &str) -> PathBuf {
        self.data_dir.join("monitoring").join(endpoint)
    }

    /// An endpoint's baseline and monitoring schedule under the tables root of an object store.
    pub fn monitoring_prefix(&self, endpoint: &str) -> String {
        format!("{STORE_MONITORING_PREFIX}/{endpoint}")
    }
}

fn directory_url(path: &Path, given: &str) -> Result<Url, LayoutError> {
    Url::from_directory_path(path).map_err(|_| LayoutError::Unsupported {
        uri: if given.is_empty() { path.display().to_string() } else { given.to_string() },
        reason: "is not an absolute local path".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_default_to_the_data_dir_and_urls_end_in_a_slash() {
        let layout = Layout::local(Path::new("/srv/inferlog")).unwrap();
        assert_eq!(layout.tables_root().as_str(), "file:///srv/inferlog/tables/");
        assert_eq!(layout.payload("iris").as_str(), "file:///srv/inferlog/tables/iris_payload/");
        assert_eq!(layout.local_table_dir("_audit").unwrap(), Path::new("/srv/inferlog/tables/_audit"));
        assert_eq!(layout.wal_dir("iris"), Path::new("/srv/inferlog/wal/iris"));
        assert!(layout.tables_are_local());
    }

    #[test]
    fn a_store_uri_keeps_its_prefix() {
        let layout = Layout::new(Path::new("/d"), Some("s3://bucket/inference/prod")).unwrap();
        assert_eq!(layout.tables_root().as_str(), "s3://bucket/inference/prod/");
        assert_eq!(layout.endpoint_table("iris", EndpointTable::DriftMetrics).as_str(), "s3://bucket/inference/prod/iris_drift_metrics/");
        assert!(!layout.tables_are_local());
        assert_eq!(layout.local_table_dir("iris_payload"), None);
        let root = Layout::new(Path::new("/d"), Some("gs://bucket")).unwrap();
        assert_eq!(root.payload("a").as_str(), "gs://bucket/a_payload/");
    }

    #[test]
    fn bad_uris_say_why() {
        let err = |uri: &str| Layout::new(Path::new("/d"), Some(uri)).unwrap_err().to_string();
        assert!(err("ftp://host/x").contains("is not on a supported store: `ftp://`"), "{}", err("ftp://host/x"));
        assert!(err("s3:///prefix").contains("names no bucket"), "{}", err("s3:///prefix"));
        assert!(err("s3://b/p?region=x").contains("takes no query"), "{}", err("s3://b/p?region=x"));
    }
}
