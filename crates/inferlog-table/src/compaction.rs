//! Background compaction: a table written every second gains one small file per commit.
//! Every `interval`, each date partition holding more than `min_files` data files is
//! rewritten into files of up to `target_file_bytes` with Delta's OPTIMIZE, whose commit
//! removes the inputs (`dataChange = false`) and adds the merged files atomically: readers
//! see the same rows before and after. Files removed by compaction are vacuumed once they
//! are older than `vacuum_retention`.
//!
//! One compactor per table: concurrent OPTIMIZE runs on the same files are not detected by
//! Delta's conflict checker, so compaction runs on the holder of the endpoint's lease (with
//! tables on an object store; one gateway owns local tables). Appends racing a compaction
//! are fine.

use crate::table::TableError;
use deltalake::operations::optimize::OptimizeType;
use deltalake::{DeltaTable, FilterOp, FilterValue};
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct CompactionOptions {
    pub interval: Duration,
    pub min_files: usize,
    pub target_file_bytes: u64,
    pub vacuum_retention: Duration,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            interval: Duration::from_secs(300),
            min_files: 64,
            target_file_bytes: 128 << 20,
            vacuum_retention: Duration::from_secs(3600),
        }
    }
}

/// What one compaction round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub partitions: Vec<String>,
    pub files_removed: u64,
    pub files_added: u64,
    pub files_vacuumed: usize,
}

/// Active data files per `date` partition.
pub fn files_per_partition(table: &DeltaTable) -> Result<BTreeMap<String, usize>, TableError> {
    let snapshot = table.snapshot().map_err(|e| TableError::Delta {
        url: table.table_url().to_string(),
        source: e,
    })?;
    let mut counts = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let date = file
            .partition_values_map()
            .get(crate::schema::PARTITION_COLUMN)
            .cloned()
            .flatten()
            .unwrap_or_default();
        *counts.entry(date).or_insert(0) += 1;
    }
    Ok(counts)
}

/// One round: compact every partition over the threshold, then vacuum.
pub async fn compact_once(url: &Url, options: &CompactionOptions) -> Result<CompactionReport, TableError> {
    let err = |e| TableError::Delta { url: url.to_string(), source: e };
    let mut table = crate::load_if_exists(url).await.map_err(err)?;
    let mut report = CompactionReport::default();
    if table.version().is_none() {
        // Not created yet (an unpacked table before its first pass): nothing to compact.
        return Ok(report);
    }
    let counts = files_per_partition(&table)?;
    for (date, count) in counts {
        if count <= options.min_files {
            continue;
        }
        let filters = [(crate::schema::PARTITION_COLUMN, FilterOp::Eq, FilterValue::Scalar(date.as_str()))];
        let (t, metrics) = table
            .optimize()
            .with_filters(&filters)
            .with_type(OptimizeType::Compact)
            .with_target_size(NonZeroU64::new(options.target_file_bytes.max(1)).expect("non-zero"))
            .with_max_concurrent_tasks(1)
            .with_writer_properties(crate::schema::writer_properties())
            .await
            .map_err(err)?;
        table = t;
        report.files_removed += metrics.num_files_removed;
        report.files_added += metrics.num_files_added;
        report.partitions.push(date);
    }
    if report.files_removed > 0 {
        let retention = chrono::Duration::from_std(options.vacuum_retention).unwrap_or(chrono::Duration::hours(1));
        let (_, vacuumed) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(err)?;
        report.files_vacuumed = vacuumed.files_deleted.len();
    }
    Ok(report)
}

pub struct Compactor {
    /// The table's name, for the logs and the metric's `endpoint` label.
    pub endpoint: String,
    pub url: Url,
    pub options: CompactionOptions,
}

/// Compacts every `interval`, on the holder of the endpoint's lease (see [`crate::worker`]).
impl crate::worker::Periodic for Compactor {
    fn kind(&self) -> &'static str {
        "compaction"
    }

    fn target(&self) -> &str {
        &self.endpoint
    }

    fn next_pass_in(&self) -> Duration {
        self.options.interval
    }

    async fn pass(&self) -> Result<(), crate::worker::PassError> {
        // A table that is not there yet has nothing to compact: that is not a failure.
        let r = compact_once(&self.url, &self.options).await.map_err(|e| crate::worker::PassError::Failed(e.to_string()))?;
        if r.files_removed > 0 {
            metrics::counter!("inferlog_table_compacted_files_total", "endpoint" => self.endpoint.clone()).increment(r.files_removed);
            tracing::info!(endpoint = %self.endpoint, partitions = ?r.partitions, files_removed = r.files_removed,
                files_added = r.files_added, files_vacuumed = r.files_vacuumed, "compacted");
        }
        Ok(())
    }
}
