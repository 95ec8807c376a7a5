//! Baselines: what an endpoint's inputs and outputs looked like when all was well, as
//! `statistics.json` (summaries per column), `constraints.json` (suggested checks and drift
//! thresholds, which users may edit) and `reference.parquet` (the reference values themselves,
//! which the exact drift tests — Kolmogorov-Smirnov, Wasserstein — need).
//!
//! The files are the endpoint's [`MonitoringFiles`]: `{data_dir}/monitoring/{endpoint}/` with
//! local tables, `{tables_uri}/_inferlog/monitoring/{endpoint}/` beside tables on an object
//! store (so every gateway of a fleet, and whichever holds the lease, uses the same ones).
//! Their format is modelled on SageMaker Model Monitor's and documented in docs/monitoring.md.

use inferlog_core::Layout;
use crate::{values, MonitorError};
use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::{col, CsvReadOptions, DataFrame, ParquetReadOptions, SessionContext};
use inferlog_stats::{categorical_summary, numeric_summary, value_counts, CategoricalSummary, NumericSummary, SortedSample};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use deltalake::logstore::object_store::{self, local::LocalFileSystem, path::Path as StorePath, ObjectStore, ObjectStoreExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version of the baseline file formats.
pub const FORMAT_VERSION: u32 = 1;
/// Categorical columns with at most this many values get a domain constraint.
pub const MAX_DOMAIN: usize = 100;
/// Value counts kept in `statistics.json` per categorical column (all of them stay in
/// `reference.parquet`).
pub const TOP_VALUES: usize = 50;
/// Above this many reference rows, distances (Wasserstein, Jensen-Shannon) decide drift by
/// default; at or below it, tests (Kolmogorov-Smirnov, chi-squared). Evidently's rule.
pub const LARGE_REFERENCE_ROWS: u64 = 1000;

/// Default thresholds (also written into `constraints.json`, where they can be changed).
pub mod thresholds {
    pub const PSI: f64 = 0.2;
    pub const JENSEN_SHANNON: f64 = 0.1;
    pub const NORMALIZED_WASSERSTEIN: f64 = 0.1;
    pub const P_VALUE: f64 = 0.05;
}

/// Where a baseline's rows come from.
#[derive(Debug, Clone)]
pub enum BaselineSource {
    /// Training data: a csv or parquet file. Column names are made safe the way the
    /// unpacked table names them (`sepal length (cm)` → `sepal_length_cm`), so they match.
    File(PathBuf),
    /// A window of the endpoint's own unpacked table (`since` inclusive, `until` exclusive,
    /// Unix milliseconds).
    Table { since_ms: Option<i64>, until_ms: Option<i64> },
}

/// What a column is to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Feature,
    Prediction,
    Label,
}

/// SageMaker's inferred types, plus booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InferredType {
    Integral,
    Fractional,
    String,
    Boolean,
}

impl InferredType {
    pub fn is_numeric(self) -> bool {
        matches!(self, InferredType::Integral | InferredType::Fractional)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStatistics {
    /// The column in the unpacked table (or `label` in `labeled()`) this one is compared with.
    pub name: String,
    /// The column's name in the source, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    pub role: Role,
    pub inferred_type: InferredType,
    pub num_present: u64,
    pub num_missing: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical_statistics: Option<NumericSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_statistics: Option<CategoricalSummary<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statistics {
    pub version: u32,
    /// Where the reference came from (a file path, or the table window).
    pub source: String,
    pub created_at: String,
    pub item_count: u64,
    pub features: Vec<FeatureStatistics>,
}

/// How drift of one column is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMetric {
    Psi,
    JensenShannon,
    NormalizedWasserstein,
    /// Kolmogorov-Smirnov p-value (drift when below the threshold).
    KsPValue,
    /// Chi-squared goodness-of-fit p-value (drift when below the threshold).
    ChiSquaredPValue,
}

inferlog_core::display_as_serde_name!(Role, InferredType, DriftMetric);

impl DriftMetric {
    /// The metric's name in `{endpoint}_drift_metrics`.
    pub fn name(self) -> &'static str {
        match self {
            DriftMetric::Psi => "psi",
            DriftMetric::JensenShannon => "jensen_shannon",
            DriftMetric::NormalizedWasserstein => "normalized_wasserstein",
            DriftMetric::KsPValue => "ks_p_value",
            DriftMetric::ChiSquaredPValue => "chi_squared_p_value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftConstraint {
    /// The metric that decides "drifted" for this column.
    pub metric: DriftMetric,
    /// Threshold of that metric.
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConstraints {
    pub name: String,
    pub role: Role,
    pub inferred_type: InferredType,
    /// Share of rows with a value; a window below it is a violation.
    pub completeness: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_non_negative: Option<bool>,
    /// Values outside [min, max] count as out of range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Known values of a categorical column; others count as unknown categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Vec<String>>,
    pub drift: DriftConstraint,
}

/// Default thresholds per metric, used for columns without their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitoringConfig {
    pub psi: f64,
    pub jensen_shannon: f64,
    pub normalized_wasserstein: f64,
    pub p_value: f64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            psi: thresholds::PSI,
            jensen_shannon: thresholds::JENSEN_SHANNON,
            normalized_wasserstein: thresholds::NORMALIZED_WASSERSTEIN,
            p_value: thresholds::P_VALUE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    pub version: u32,
    pub monitoring_config: MonitoringConfig,
    pub features: Vec<FeatureConstraints>,
}

/// Columns of the unpacked table that describe the exchange rather than the model's data.
const NOT_MODEL_DATA: [&str; 8] = inferlog_unpack::FIXED_COLUMNS;

/// An endpoint's monitoring files (its baseline and the scheduled monitor's progress), on
/// local disk or beside the tables on their object store, as the layout says. Each file is
/// replaced whole: a reader never sees half of one.
pub struct MonitoringFiles {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    /// Where they are, for messages.
    shown: String,
}

impl MonitoringFiles {
    pub fn of(layout: &Layout, endpoint: &str) -> Result<MonitoringFiles, MonitorError> {
        if layout.tables_are_local() {
            let dir = layout.monitoring_dir(endpoint);
            let prefix = StorePath::from_absolute_path(&dir).map_err(|e| MonitorError::Input(format!("{}: {e}", dir.display())))?;
            let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
            return Ok(MonitoringFiles { store, prefix, shown: dir.display().to_string() });
        }
        let root = layout.tables_root();
        let store = inferlog_table::table::root_store(root).map_err(MonitorError::Input)?;
        let prefix = layout.monitoring_prefix(endpoint);
        Ok(MonitoringFiles { store, shown: format!("{root}{prefix}"), prefix: StorePath::from(prefix) })
    }

    /// With tables on an object store: brings an endpoint's baseline and schedule kept in the
    /// data dir before the tables moved there, unless the store has a baseline already.
    /// Returns how many files were brought.
    pub async fn import_local(layout: &Layout, endpoint: &str) -> Result<usize, MonitorError> {
        let local = layout.monitoring_dir(endpoint);
        if layout.tables_are_local() || !local.join(CONSTRAINTS_FILE).is_file() {
            return Ok(0);
        }
        let files = MonitoringFiles::of(layout, endpoint)?;
        if files.read(CONSTRAINTS_FILE).await?.is_some() {
            return Ok(0);
        }
        let mut imported = 0;
        // The constraints last: a monitor that finds them finds the files they describe.
        for name in [REFERENCE_FILE, STATISTICS_FILE, SCHEDULE_FILE, CONSTRAINTS_FILE] {
            let Ok(bytes) = std::fs::read(local.join(name)) else { continue };
            files.write(name, bytes).await?;
            imported += 1;
        }
        tracing::info!(endpoint, from = %local.display(), to = %files.location(), "imported the data dir's baseline into the shared monitoring files");
        Ok(imported)
    }

    /// Where the files are.
    pub fn location(&self) -> &str {
        &self.shown
    }

    fn path(&self, name: &str) -> StorePath {
        self.prefix.clone().join(name)
    }

    /// The file `name`, `None` if there is none.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, MonitorError> {
        let failed = |e: object_store::Error| MonitorError::Input(format!("cannot read {}/{name}: {e}", self.shown));
        match self.store.get(&self.path(name)).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(failed)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    /// Writes the file `name` whole (a local file is written aside and renamed into place).
    pub async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), MonitorError> {
        self.store.put(&self.path(name), bytes.into()).await.map(|_| ()).map_err(|e| MonitorError::Io {
            path: format!("{}/{name}", self.shown),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// `statistics.json` or `constraints.json` of the baseline.
    pub async fn read_json<T: serde::de::DeserializeOwned>(&self, endpoint: &str, name: &str) -> Result<T, MonitorError> {
        let bytes = self.read(name).await?.ok_or_else(|| {
            MonitorError::NotReady(format!(
                "no baseline for `{endpoint}` in {} (no {name}); create one with `inferlog baseline {endpoint} --from FILE`",
                self.shown
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| MonitorError::Input(format!("{}/{name}: {e}", self.shown)))
    }

    /// The baseline's reference values.
    pub async fn read_reference(&self) -> Result<Vec<RecordBatch>, MonitorError> {
        let bytes = self
            .read(REFERENCE_FILE)
            .await?
            .ok_or_else(|| MonitorError::Input(format!("cannot read the baseline's {}/{REFERENCE_FILE}: it is missing", self.shown)))?;
        let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.build()?;
        Ok(reader.collect::<Result<_, _>>()?)
    }
}

pub const STATISTICS_FILE: &str = "statistics.json";
pub const CONSTRAINTS_FILE: &str = "constraints.json";
pub const REFERENCE_FILE: &str = "reference.parquet";
/// The scheduled monitor's progress, among the endpoint's monitoring files: on the store with
/// a fleet, so a new lease holder goes on where the last one stopped.
pub const SCHEDULE_FILE: &str = "schedule.json";

#[derive(Debug, Clone, Default)]
pub struct BaselineOptions {
    /// Source column holding the ground truth.
    pub label: Option<String>,
    /// Source column holding the model's output (compared with `prediction`).
    pub prediction: Option<String>,
}

/// What `build` wrote.
#[derive(Debug, Clone)]
pub struct BaselineReport {
    /// Where the files were written.
    pub location: String,
    pub rows: u64,
    pub statistics: Statistics,
    pub constraints: Constraints,
}

/// Builds and writes an endpoint's baseline.
pub async fn build(
    layout: &Layout,
    endpoint: &str,
    source: &BaselineSource,
    options: &BaselineOptions,
) -> Result<BaselineReport, MonitorError> {
    let ctx = SessionContext::new();
    let (df, source_text) = match source {
        BaselineSource::File(path) => (read_file(&ctx, path).await?, path.display().to_string()),
        BaselineSource::Table { since_ms, until_ms } => {
            (read_window(layout, endpoint, *since_ms, *until_ms).await?, window_text(endpoint, *since_ms, *until_ms))
        }
    };
    let columns = pick_columns(df.schema().as_arrow(), source, options)?;
    let batches = df
        .select(columns.iter().map(|c| col(format!("\"{}\"", c.source))).collect::<Vec<_>>())?
        .collect()
        .await?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows == 0 {
        return Err(MonitorError::Input(format!("{source_text} has no rows to build a baseline from")));
    }
    let mut features = Vec::with_capacity(columns.len());
    let mut reference_fields = Vec::with_capacity(columns.len());
    let mut reference_columns: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(index).clone()).collect();
        let stats = summarize(column, &arrays)?;
        let concatenated = deltalake::arrow::compute::concat(&arrays.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?;
        let target_type = match stats.inferred_type {
            InferredType::Integral | InferredType::Fractional => DataType::Float64,
            InferredType::Boolean => DataType::Boolean,
            InferredType::String => DataType::Utf8,
        };
        reference_columns.push(cast(&concatenated, &target_type)?);
        reference_fields.push(Field::new(&column.name, target_type, true));
        features.push(stats);
    }
    let statistics = Statistics {
        version: FORMAT_VERSION,
        source: source_text,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        item_count: rows,
        features,
    };
    let constraints = suggest_constraints(&statistics);
    let files = MonitoringFiles::of(layout, endpoint)?;
    let reference = RecordBatch::try_new(Arc::new(Schema::new(reference_fields)), reference_columns)?;
    let mut parquet = Vec::new();
    {
        let mut writer = deltalake::parquet::arrow::ArrowWriter::try_new(&mut parquet, reference.schema(), None)?;
        writer.write(&reference)?;
        writer.close()?;
    }
    // The reference first, the constraints last: a monitor that finds the constraints finds
    // the files they describe.
    files.write(REFERENCE_FILE, parquet).await?;
    files.write(STATISTICS_FILE, serde_json::to_vec_pretty(&statistics)?).await?;
    files.write(CONSTRAINTS_FILE, serde_json::to_vec_pretty(&constraints)?).await?;
    Ok(BaselineReport { location: files.location().to_string(), rows, statistics, constraints })
}

async fn read_file(ctx: &SessionContext, path: &Path) -> Result<DataFrame, MonitorError> {
    if !path.is_file() {
        return Err(MonitorError::Input(format!("no file {}", path.display())));
    }
    let location = path
        .to_str()
        .ok_or_else(|| MonitorError::Input(format!("{} is not a UTF-8 path", path.display())))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_lowercase();
    Ok(match ext.as_str() {
        "csv" => ctx.read_csv(location, CsvReadOptions::new()).await?,
        "parquet" => ctx.read_parquet(location, ParquetReadOptions::default()).await?,
        _ => {
            return Err(MonitorError::Input(format!(
                "cannot tell the format of {} (use .csv or .parquet)",
                path.display()
            )))
        }
    })
}

async fn read_window(
    layout: &Layout,
    endpoint: &str,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<DataFrame, MonitorError> {
    let ctx = inferlog_query::session(layout, None).await?;
    let table = format!("{endpoint}_unpacked");
    let mut filters = vec!["row_index IS NOT NULL".to_string()];
    if let Some(since) = since_ms {
        filters.push(format!("timestamp_ms >= {since}"));
    }
    if let Some(until) = until_ms {
        filters.push(format!("timestamp_ms < {until}"));
    }
    let sql = format!("SELECT * FROM \"{table}\" WHERE {}", filters.join(" AND "));
    ctx.sql(&sql).await.map_err(|e| {
        MonitorError::Input(format!(
            "cannot read {table} (run `inferlog unpack {endpoint}` or set unpack = true first): {e}"
        ))
    })
}

fn window_text(endpoint: &str, since_ms: Option<i64>, until_ms: Option<i64>) -> String {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| "…".into())
    };
    format!("{endpoint}_unpacked [{}, {})", time(since_ms), time(until_ms))
}

/// A source column and what it becomes in the baseline.
struct ColumnChoice {
    source: String,
    name: String,
    role: Role,
}

fn pick_columns(
    schema: &Schema,
    source: &BaselineSource,
    options: &BaselineOptions,
) -> Result<Vec<ColumnChoice>, MonitorError> {
    let present: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for wanted in [&options.label, &options.prediction].into_iter().flatten() {
        if !present.contains(&wanted.as_str()) {
            return Err(MonitorError::Input(format!("no column `{wanted}` (there are: {})", present.join(", "))));
        }
    }
    let mut out = Vec::new();
    for field in schema.fields() {
        let source_name = field.name().as_str();
        let from_table = matches!(source, BaselineSource::Table { .. });
        if from_table && NOT_MODEL_DATA.contains(&source_name) {
            continue;
        }
        if matches!(field.data_type(), DataType::Binary | DataType::LargeBinary | DataType::BinaryView) {
            continue;
        }
        let (name, role) = if options.label.as_deref() == Some(source_name) {
            ("label".to_string(), Role::Label)
        } else if options.prediction.as_deref() == Some(source_name) {
            ("prediction".to_string(), Role::Prediction)
        } else {
            let name = inferlog_payload::sanitize_column_name(source_name);
            let role = if name.starts_with("prediction") { Role::Prediction } else { Role::Feature };
            (name, role)
        };
        if out.iter().any(|c: &ColumnChoice| c.name == name) {
            return Err(MonitorError::Input(format!(
                "two columns would both be compared as `{name}`; rename one in the source"
            )));
        }
        out.push(ColumnChoice { source: source_name.to_string(), name, role });
    }
    if out.iter().all(|c| c.role != Role::Feature) {
        return Err(MonitorError::Input("the source has no feature columns".into()));
    }
    Ok(out)
}

fn summarize(column: &ColumnChoice, arrays: &[ArrayRef]) -> Result<FeatureStatistics, MonitorError> {
    let data_type = arrays.first().map(|a| a.data_type().clone()).unwrap_or(DataType::Null);
    let inferred_type = match &data_type {
        t if t.is_integer() => InferredType::Integral,
        t if t.is_floating() || t.is_numeric() => InferredType::Fractional,
        DataType::Boolean => InferredType::Boolean,
        _ => InferredType::String,
    };
    let inferred_type = if inferred_type == InferredType::Integral && is_class_column(column, arrays)? {
        InferredType::String
    } else {
        inferred_type
    };
    let source_name = (column.source != column.name).then(|| column.source.clone());
    let mut stats = FeatureStatistics {
        name: column.name.clone(),
        source_name,
        role: column.role,
        inferred_type,
        num_present: 0,
        num_missing: 0,
        numerical_statistics: None,
        string_statistics: None,
    };
    if inferred_type.is_numeric() {
        let (values, missing) = values::present(values::numbers(arrays)?);
        stats.num_present = values.len() as u64;
        stats.num_missing = missing;
        let sample = SortedSample::new(values)?;
        stats.numerical_statistics = numeric_summary(&sample, missing);
    } else {
        let (values, missing) = values::present(values::texts(arrays)?);
        stats.num_present = values.len() as u64;
        stats.num_missing = missing;
        let mut summary = categorical_summary(value_counts(values), missing, TOP_VALUES);
        // statistics.json stays readable for high-cardinality columns; the full counts are
        // in reference.parquet.
        if summary.value_counts.len() > TOP_VALUES {
            summary.value_counts = summary.top.iter().cloned().collect::<BTreeMap<_, _>>();
        }
        stats.string_statistics = Some(summary);
    }
    Ok(stats)
}

/// Integer columns with at most this many distinct values are categories, not quantities.
pub const MAX_INTEGER_CATEGORIES: usize = 10;

/// Whether an integer column holds classes: the label or prediction with at most
/// [`MAX_DOMAIN`] distinct values, or any column with at most [`MAX_INTEGER_CATEGORIES`].
/// Its values are then compared as categories (chi-squared, Jensen-Shannon, a domain), not as
/// numbers: class 2 is not "more" than class 1.
fn is_class_column(column: &ColumnChoice, arrays: &[ArrayRef]) -> Result<bool, MonitorError> {
    let limit = if column.role == Role::Feature { MAX_INTEGER_CATEGORIES } else { MAX_DOMAIN };
    let mut distinct = std::collections::HashSet::new();
    for value in values::numbers(arrays)?.into_iter().flatten() {
        distinct.insert(value.to_bits());
        if distinct.len() > limit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Suggested constraints: the baseline's completeness, sign, range and domain, and the drift
/// metric Evidently would choose for the column (distances for a reference of more than
/// 1,000 rows, tests below).
pub fn suggest_constraints(statistics: &Statistics) -> Constraints {
    let config = MonitoringConfig::default();
    let large = statistics.item_count > LARGE_REFERENCE_ROWS;
    let features = statistics
        .features
        .iter()
        .map(|f| {
            let total = (f.num_present + f.num_missing).max(1) as f64;
            let numeric = f.numerical_statistics.as_ref();
            let drift = match (f.inferred_type.is_numeric(), large) {
                (true, true) => DriftConstraint {
                    metric: DriftMetric::NormalizedWasserstein,
                    threshold: config.normalized_wasserstein,
                },
                (true, false) => DriftConstraint { metric: DriftMetric::KsPValue, threshold: config.p_value },
                (false, true) => DriftConstraint { metric: DriftMetric::JensenShannon, threshold: config.jensen_shannon },
                (false, false) => DriftConstraint { metric: DriftMetric::ChiSquaredPValue, threshold: config.p_value },
            };
            let domain = f
                .string_statistics
                .as_ref()
                .filter(|s| s.distinct <= MAX_DOMAIN)
                .map(|s| s.value_counts.keys().cloned().collect());
            FeatureConstraints {
                name: f.name.clone(),
                role: f.role,
                inferred_type: f.inferred_type,
                completeness: f.num_present as f64 / total,
                is_non_negative: numeric.map(|n| n.min >= 0.0),
                min: numeric.map(|n| n.min),
                max: numeric.map(|n| n.max),
                domain,
                drift,
            }
        })
        .collect();
    Constraints { version: FORMAT_VERSION, monitoring_config: config, features }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn printed_names_are_the_names_of_the_files_and_tables() {
        assert_eq!(DriftMetric::KsPValue.to_string(), "ks_p_value");
        assert_eq!(DriftMetric::KsPValue.to_string(), DriftMetric::KsPValue.name());
        assert_eq!(Role::Prediction.to_string(), "prediction");
        assert_eq!(InferredType::Fractional.to_string(), "Fractional");
    }
}
