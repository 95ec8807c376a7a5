//! Monitoring runs: for each time window of `{endpoint}_unpacked` (and each slice), data
//! quality, drift against the baseline and against the previous window, and model quality
//! where labels exist; written in long form to `{endpoint}_profile_metrics`,
//! `{endpoint}_drift_metrics` and `{endpoint}_violations`. A run replaces the rows of the
//! windows it covers that have its window length and slices, so re-running (or backfilling)
//! a window never doubles it, and runs of other lengths or slices keep theirs.

use inferlog_core::Layout;
use crate::baseline::{Constraints, DriftMetric, FeatureConstraints, MonitoringFiles, CONSTRAINTS_FILE};
use crate::{values, MonitorError};
use deltalake::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::datafusion::prelude::{col, lit};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use inferlog_stats::{categorical_drift, classification_metrics, numeric_drift, regression_metrics, SortedSample};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Window length in milliseconds.
    pub window_ms: i64,
    /// First window starts here (default: one window before `until_ms`).
    pub since_ms: Option<i64>,
    /// Windows end here, exclusive (default: now, rounded down to a window boundary).
    pub until_ms: Option<i64>,
    /// SQL expressions over the unpacked table; each of their values is a slice.
    pub slices: Vec<String>,
    /// Start at the window holding the table's first row instead (recomputes all history).
    pub backfill: bool,
}

/// One value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    /// Null for metrics of the whole window (row_count, accuracy, ...).
    pub column_name: Option<String>,
    pub metric: String,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    pub metric: MetricRow,
    /// `baseline` or `previous`.
    pub compared_to: &'static str,
    /// Null for metrics that have no threshold (the KS statistic, L-infinity).
    pub threshold: Option<f64>,
    pub drifted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub slice_key: Option<String>,
    pub slice_value: Option<String>,
    pub column_name: Option<String>,
    /// SageMaker's names: completeness_check, data_type_check, baseline_drift_check,
    /// missing_column_check, extra_column_check, categorical_values_check, plus range_check.
    pub check: &'static str,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    pub windows: usize,
    pub profile: Vec<MetricRow>,
    pub drift: Vec<DriftRow>,
    pub violations: Vec<Violation>,
}

/// The values of one column in a set of rows. Text is held as codes into its distinct values:
/// a million rows of a few categories cost four bytes a row, not a string each.
pub(crate) enum ColumnData {
    Numeric(Vec<Option<f64>>),
    Text(values::Coded),
}

/// [`run`] on a blocking thread: a large window is seconds of computation, which must not
/// hold up the other tasks of the runtime it is called from (queries, unpacking).
pub async fn run_blocking(layout: &Layout, endpoint: &str, options: &MonitorOptions) -> Result<MonitorReport, MonitorError> {
    let (layout, endpoint, options) = (layout.clone(), endpoint.to_string(), options.clone());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(run(&layout, &endpoint, &options)))
        .await
        .map_err(|e| MonitorError::Input(format!("the monitoring run stopped: {e}")))?
}

/// Runs the monitor over `[since, until)` in windows and writes the three metric tables.
pub async fn run(layout: &Layout, endpoint: &str, options: &MonitorOptions) -> Result<MonitorReport, MonitorError> {
    let window = options.window_ms.max(1);
    let until = options
        .until_ms
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis().div_euclid(window) * window + window);
    let files = MonitoringFiles::of(layout, endpoint)?;
    let constraints: Constraints = files.read_json(endpoint, CONSTRAINTS_FILE).await?;
    // Only this endpoint's tables: slice expressions are SQL and must not reach others.
    let ctx = endpoint_session(layout, endpoint).await?;
    let table = format!("{endpoint}_unpacked");
    let present: Vec<String> = match ctx.table(table.as_str()).await {
        Ok(df) => df.schema().fields().iter().map(|f| f.name().clone()).collect(),
        Err(_) => return Err(MonitorError::NotReady(format!("no table {table}: run `inferlog unpack {endpoint}` first"))),
    };
    let since = match (options.backfill, options.since_ms) {
        (true, _) => first_timestamp(&ctx, &table).await?.map_or(until - window, |first| first.div_euclid(window) * window),
        (false, Some(since)) => since,
        (false, None) => until - window,
    };
    if since >= until {
        return Err(MonitorError::Input("--since must be before --until".into()));
    }
    if (until - since) / window > MAX_WINDOWS {
        return Err(MonitorError::Input(format!(
            "{} windows of {window} ms from --since to --until; at most {MAX_WINDOWS} per run (use a longer window)",
            (until - since) / window
        )));
    }
    let monitored: Vec<&FeatureConstraints> = constraints
        .features
        .iter()
        .filter(|f| f.role != crate::baseline::Role::Label && present.contains(&f.name))
        .collect();
    let reference = read_reference(&files.read_reference().await?, &monitored)?;
    let mut select = vec!["timestamp_ms".to_string(), "unpack_error".to_string()];
    select.extend(monitored.iter().map(|f| format!("\"{}\"", f.name)));
    for (i, expr) in options.slices.iter().enumerate() {
        select.push(format!("CAST(({expr}) AS VARCHAR) AS __slice_{i}"));
    }
    // Input columns the baseline does not know (outputs, `prediction*`, may be left out of a
    // baseline of training data): a window where they hold values breaks extra_column_check.
    let extra_columns: Vec<&String> = present
        .iter()
        .filter(|c| {
            !inferlog_unpack::FIXED_COLUMNS.contains(&c.as_str())
                && !c.starts_with("prediction")
                && !constraints.features.iter().any(|f| &f.name == *c)
        })
        .collect();
    select.extend(extra_columns.iter().map(|c| format!("CAST(\"{c}\" IS NOT NULL AS BIGINT)")));
    // One window more than asked for: the window before `since` is what the first window's
    // drift against the previous window compares to.
    let sql = format!(
        "SELECT {} FROM \"{table}\" WHERE row_index IS NOT NULL AND timestamp_ms >= {} AND timestamp_ms < {until}",
        select.join(", "),
        since.saturating_sub(window)
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| MonitorError::Input(format!("cannot read {table}: {e}")))?
        .collect()
        .await?;
    let column = |index: usize| -> Vec<ArrayRef> { batches.iter().map(|b| b.column(index).clone()).collect() };
    let timestamps: Vec<i64> = values::numbers(&column(0))?.into_iter().map(|v| v.unwrap_or(0.0) as i64).collect();
    let by_time = RowsByTime::new(&timestamps);
    let errors = values::texts(&column(1))?;
    let data: Vec<ColumnData> =
        monitored.iter().enumerate().map(|(i, f)| ColumnData::read(&column(2 + i), f)).collect::<Result<_, _>>()?;
    let slice_columns: Vec<Vec<Option<String>>> = (0..options.slices.len())
        .map(|i| values::texts(&column(2 + monitored.len() + i)))
        .collect::<Result<_, _>>()?;
    let first_extra = 2 + monitored.len() + options.slices.len();
    let extra_present: Vec<Vec<bool>> = (0..extra_columns.len())
        .map(|i| Ok(values::numbers(&column(first_extra + i))?.into_iter().map(|v| v == Some(1.0)).collect()))
        .collect::<Result<_, MonitorError>>()?;
    // Everything is in the columns above now; the Arrow batches can go.
    drop(batches);

    let mut report = MonitorReport::default();
    let missing_columns: Vec<&FeatureConstraints> =
        constraints.features.iter().filter(|f| f.role != crate::baseline::Role::Label && !present.contains(&f.name)).collect();
    let reference: Vec<Prepared> = reference.iter().map(ColumnData::prepare_all).collect::<Result<_, _>>()?;
    let prepare = |rows: &[usize]| -> Result<Vec<Prepared>, MonitorError> { data.iter().map(|d| d.prepare(rows)).collect() };
    // Per slice, the previous window's prepared columns; an empty window (no traffic) has
    // nothing to compare with and is left out.
    let mut previous: HashMap<(Option<String>, Option<String>), Vec<Prepared>> = HashMap::new();
    for (key, value, rows) in window_groups(&by_time, since.saturating_sub(window), since, &options.slices, &slice_columns) {
        if !rows.is_empty() {
            previous.insert((key, value), prepare(&rows)?);
        }
    }
    let mut start = since;
    while start < until {
        let end = (start + window).min(until);
        report.windows += 1;
        // This window's prepared columns per slice: the next window's "previous". A slice
        // without rows here has no previous there.
        let mut this_window = HashMap::new();
        for (slice_key, slice_value, rows) in window_groups(&by_time, start, end, &options.slices, &slice_columns) {
            let key = (slice_key.clone(), slice_value.clone());
            let base = MetricRow {
                window_start_ms: start,
                window_end_ms: end,
                slice_key: slice_key.clone(),
                slice_value: slice_value.clone(),
                column_name: None,
                metric: String::new(),
                value: None,
            };
            let metric = |column: Option<&str>, name: &str, value: Option<f64>| MetricRow {
                column_name: column.map(str::to_string),
                metric: name.to_string(),
                value,
                ..base.clone()
            };
            let violation = |column: Option<&str>, check: &'static str, description: String| Violation {
                window_start_ms: start,
                window_end_ms: end,
                slice_key: slice_key.clone(),
                slice_value: slice_value.clone(),
                column_name: column.map(str::to_string),
                check,
                description,
            };
            report.profile.push(metric(None, "row_count", Some(rows.len() as f64)));
            // Columns are a property of the table, not of a slice: checked on the whole window.
            let whole_window = slice_key.is_none();
            for (c, has_value) in extra_columns.iter().zip(&extra_present).filter(|_| whole_window) {
                let with_values = rows.iter().filter(|&&r| has_value[r]).count();
                if with_values > 0 {
                    report.violations.push(violation(
                        Some(c.as_str()),
                        "extra_column_check",
                        format!("`{c}` has values in {with_values} rows but is not in the baseline"),
                    ));
                }
            }
            // An empty window says nothing about the table's columns: on a fresh gateway the
            // unpacked table has no feature columns until its first request is unpacked.
            for f in missing_columns.iter().filter(|_| whole_window && !rows.is_empty()) {
                report.violations.push(violation(
                    Some(&f.name),
                    "missing_column_check",
                    format!("`{}` is in the baseline but not in the unpacked table", f.name),
                ));
            }
            let prepared = prepare(&rows)?;
            for (i, f) in monitored.iter().enumerate() {
                let name = f.name.as_str();
                let n = rows.len() as f64;
                // `unpack_error` lists `column: expected ..., got ...` reasons joined by "; ".
                let type_error = format!("{name}: expected");
                let type_errors = rows
                    .iter()
                    .filter(|&&r| errors[r].as_deref().is_some_and(|e| e.split("; ").any(|reason| reason.starts_with(&type_error))))
                    .count() as f64;
                let present_rows = prepared[i].present();
                let quality = prepared[i].quality(f);
                let nulls = n - present_rows as f64;
                let rate = |x: f64| (n > 0.0).then(|| x / n);
                report.profile.push(metric(Some(name), "null_rate", rate(nulls)));
                report.profile.push(metric(Some(name), "type_error_rate", rate(type_errors)));
                for (m, v) in &quality {
                    report.profile.push(metric(Some(name), m, rate(*v)));
                }
                if n > 0.0 && present_rows as f64 / n < f.completeness - 1e-12 {
                    report.violations.push(violation(
                        Some(name),
                        "completeness_check",
                        format!("{:.4} of rows have a value; the baseline had {:.4}", present_rows as f64 / n, f.completeness),
                    ));
                }
                if type_errors > 0.0 {
                    report.violations.push(violation(Some(name), "data_type_check", format!("{type_errors} values of another type")));
                }
                for (_, v) in &quality {
                    if *v > 0.0 {
                        let (check, description) = match &prepared[i] {
                            Prepared::Numeric(sample) => ("range_check", describe_out_of_range(sample.as_slice(), f)),
                            Prepared::Text(_) => ("categorical_values_check", format!("{v} values unknown category")),
                        };
                        report.violations.push(violation(Some(name), check, description));
                    }
                }
                let mut compare = |against: &Prepared, compared_to: &'static str| {
                    for (m, value) in drift_values(against, &prepared[i]) {
                        let threshold = threshold_for(&constraints, f, m);
                        let drifted = match (value, threshold) {
                            (Some(v), Some((t, true))) => v >= t,
                            (Some(v), Some((t, false))) => v < t,
                            _ => false,
                        };
                        if drifted && compared_to == "baseline" && metric_kind(m) == Some(f.drift.metric) {
                            report.violations.push(violation(
                                Some(name),
                                "baseline_drift_check",
                                format!("{m} = {:.6} against the baseline (threshold {})", value.unwrap_or(f64::NAN), f.drift.threshold),
                            ));
                        }
                        report.drift.push(DriftRow {
                            metric: metric(Some(name), m, value),
                            compared_to,
                            threshold: threshold.map(|(t, _)| t),
                            drifted,
                        });
                    }
                };
                compare(&reference[i], "baseline");
                if let Some(before) = previous.get(&key) {
                    compare(&before[i], "previous");
                }
            }
            if !rows.is_empty() {
                this_window.insert(key, prepared);
            }
        }
        previous = this_window;
        start = end;
    }
    quality_metrics(&ctx, endpoint, &constraints, &present, since, until, window, &options.slices, &mut report).await?;
    write_tables(layout, endpoint, since, until, window, &options.slices, &report).await?;
    Ok(report)
}

/// Windows one run computes at most.
const MAX_WINDOWS: i64 = 100_000;

/// A session with only `endpoint`'s own tables.
pub(crate) async fn endpoint_session(layout: &Layout, endpoint: &str) -> Result<deltalake::datafusion::prelude::SessionContext, MonitorError> {
    let own = ["payload", "unpacked", "labels"].map(|suffix| format!("{endpoint}_{suffix}"));
    Ok(inferlog_query::session_with(layout, None, &|table| own.iter().any(|t| t == table)).await?)
}

/// The time of the table's first instance row.
async fn first_timestamp(ctx: &deltalake::datafusion::prelude::SessionContext, table: &str) -> Result<Option<i64>, MonitorError> {
    let batches = ctx
        .sql(&format!("SELECT min(timestamp_ms) FROM \"{table}\" WHERE row_index IS NOT NULL"))
        .await?
        .collect()
        .await?;
    let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
    Ok(values::numbers(&arrays)?.into_iter().flatten().next().map(|v| v as i64))
}

/// Row numbers in time order, so each window's rows are found by binary search rather than a
/// scan of every row (a backfill has many windows).
struct RowsByTime {
    order: Vec<usize>,
    sorted: Vec<i64>,
}

impl RowsByTime {
    fn new(timestamps: &[i64]) -> Self {
        let mut order: Vec<usize> = (0..timestamps.len()).collect();
        order.sort_unstable_by_key(|&r| timestamps[r]);
        let sorted = order.iter().map(|&r| timestamps[r]).collect();
        RowsByTime { order, sorted }
    }

    /// Rows with `start <= timestamp < end`.
    fn between(&self, start: i64, end: i64) -> Vec<usize> {
        let from = self.sorted.partition_point(|&t| t < start);
        let to = self.sorted.partition_point(|&t| t < end);
        self.order[from..to.max(from)].to_vec()
    }
}

/// The rows of one window, `[start, end)`: all of them (slice key and value null), then the
/// rows of each value of each slice expression (a null value is the slice `null`).
fn window_groups(
    by_time: &RowsByTime,
    start: i64,
    end: i64,
    slices: &[String],
    slice_values: &[Vec<Option<String>>],
) -> Vec<(Option<String>, Option<String>, Vec<usize>)> {
    let in_window = by_time.between(start, end);
    let mut groups = vec![(None, None, in_window.clone())];
    for (expr, values) in slices.iter().zip(slice_values) {
        let mut by_value: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &r in &in_window {
            by_value.entry(values[r].clone().unwrap_or_else(|| "null".into())).or_default().push(r);
        }
        groups.extend(by_value.into_iter().map(|(v, rows)| (Some(expr.clone()), Some(v), rows)));
    }
    groups
}

impl ColumnData {
    /// A column's values, as numbers or text by the baseline's type of it.
    pub(crate) fn read(arrays: &[ArrayRef], f: &FeatureConstraints) -> Result<Self, MonitorError> {
        Ok(if f.inferred_type.is_numeric() {
            ColumnData::Numeric(values::numbers(arrays)?)
        } else {
            ColumnData::Text(values::coded(arrays)?)
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            ColumnData::Numeric(v) => v.len(),
            ColumnData::Text(v) => v.codes.len(),
        }
    }
}

pub(crate) fn read_reference(batches: &[RecordBatch], monitored: &[&FeatureConstraints]) -> Result<Vec<ColumnData>, MonitorError> {
    monitored
        .iter()
        .map(|f| {
            let arrays: Vec<ArrayRef> = batches
                .iter()
                .map(|b| {
                    b.column_by_name(&f.name).cloned().ok_or_else(|| {
                        MonitorError::Input(format!("reference.parquet has no column {}; rebuild the baseline", f.name))
                    })
                })
                .collect::<Result<_, _>>()?;
            ColumnData::read(&arrays, f)
        })
        .collect()
}

/// A column's present values in some rows, ready for drift and data quality: sorted numbers
/// or counts per value. Prepared once per window and slice, then compared with the baseline
/// and kept for the next window's comparison with this one.
pub(crate) enum Prepared {
    Numeric(SortedSample),
    Text(BTreeMap<String, u64>),
}

impl Prepared {
    fn present(&self) -> usize {
        match self {
            Prepared::Numeric(sample) => sample.len(),
            Prepared::Text(counts) => counts.values().sum::<u64>() as usize,
        }
    }

    /// Data-quality counts: values outside the baseline's [min, max] (numbers) or outside its
    /// domain (text).
    fn quality(&self, f: &FeatureConstraints) -> Vec<(&'static str, f64)> {
        match self {
            Prepared::Numeric(sample) => {
                let (below, above) = out_of_range(sample.as_slice(), f);
                vec![("out_of_range_rate", (below.len() + above.len()) as f64)]
            }
            Prepared::Text(counts) => match &f.domain {
                Some(domain) => {
                    let unknown: u64 = counts.iter().filter(|(value, _)| !domain.contains(value)).map(|(_, n)| n).sum();
                    vec![("unknown_category_rate", unknown as f64)]
                }
                None => Vec::new(),
            },
        }
    }
}

/// The sorted values below the baseline's min and those above its max.
fn out_of_range<'a>(sorted: &'a [f64], f: &FeatureConstraints) -> (&'a [f64], &'a [f64]) {
    let below = f.min.map_or(0, |min| sorted.partition_point(|&v| v < min));
    let above = f.max.map_or(sorted.len(), |max| sorted.partition_point(|&v| v <= max)).max(below);
    (&sorted[..below], &sorted[above..])
}

/// A range violation naming the bound crossed, for example
/// `2 values below the baseline's min 4.3 (lowest 3.9); 1 above its max 7.9 (highest 8.4)`.
fn describe_out_of_range(sorted: &[f64], f: &FeatureConstraints) -> String {
    let (below, above) = out_of_range(sorted, f);
    let mut parts = Vec::new();
    if let (Some(min), Some(lowest)) = (f.min, below.first()) {
        parts.push(format!("{} values below the baseline's min {min} (lowest {lowest})", below.len()));
    }
    if let (Some(max), Some(highest)) = (f.max, above.last()) {
        parts.push(format!("{} values above the baseline's max {max} (highest {highest})", above.len()));
    }
    parts.join("; ")
}

impl ColumnData {
    pub(crate) fn prepare(&self, rows: &[usize]) -> Result<Prepared, MonitorError> {
        Ok(match self {
            ColumnData::Numeric(values) => Prepared::Numeric(SortedSample::new(rows.iter().filter_map(|&r| values[r]).collect())?),
            ColumnData::Text(coded) => {
                let mut counts = vec![0u64; coded.values.len()];
                for code in rows.iter().filter_map(|&r| coded.codes[r]) {
                    counts[code as usize] += 1;
                }
                Prepared::Text(
                    coded.values.iter().zip(counts).filter(|(_, n)| *n > 0).map(|(value, n)| (value.clone(), n)).collect(),
                )
            }
        })
    }

    pub(crate) fn prepare_all(&self) -> Result<Prepared, MonitorError> {
        self.prepare(&(0..self.len()).collect::<Vec<_>>())
    }
}

/// Drift metrics of `current` against `reference`; all `None` when either side has no value.
pub(crate) fn drift_values(reference: &Prepared, current: &Prepared) -> Vec<(&'static str, Option<f64>)> {
    match (reference, current) {
        (Prepared::Numeric(r), Prepared::Numeric(c)) => {
            let drift = numeric_drift(r, c);
            vec![
                ("psi", drift.as_ref().map(|d| d.psi)),
                ("jensen_shannon", drift.as_ref().map(|d| d.jensen_shannon)),
                ("normalized_wasserstein", drift.as_ref().map(|d| d.wasserstein_normalized)),
                ("ks_statistic", drift.as_ref().map(|d| d.ks.statistic)),
                ("ks_p_value", drift.as_ref().map(|d| d.ks.p_value)),
            ]
        }
        (Prepared::Text(r), Prepared::Text(c)) => {
            let drift = categorical_drift(r, c);
            vec![
                ("psi", drift.as_ref().map(|d| d.psi)),
                ("jensen_shannon", drift.as_ref().map(|d| d.jensen_shannon)),
                ("chi_squared_p_value", drift.as_ref().and_then(|d| d.chi_square.as_ref()).map(|c| c.p_value)),
                ("l_infinity", drift.as_ref().map(|d| d.l_infinity)),
            ]
        }
        _ => Vec::new(),
    }
}

fn metric_kind(metric: &str) -> Option<DriftMetric> {
    [
        DriftMetric::Psi,
        DriftMetric::JensenShannon,
        DriftMetric::NormalizedWasserstein,
        DriftMetric::KsPValue,
        DriftMetric::ChiSquaredPValue,
    ]
    .into_iter()
    .find(|kind| kind.name() == metric)
}

/// The threshold of a metric for a column (its own from constraints.json when the column is
/// decided by this metric, else the configured default) and whether values at or above it are
/// drift (distances) rather than below it (p-values).
pub(crate) fn threshold_for(constraints: &Constraints, f: &FeatureConstraints, metric: &str) -> Option<(f64, bool)> {
    let kind = metric_kind(metric)?;
    let config = &constraints.monitoring_config;
    let threshold = if kind == f.drift.metric {
        f.drift.threshold
    } else {
        match kind {
            DriftMetric::Psi => config.psi,
            DriftMetric::JensenShannon => config.jensen_shannon,
            DriftMetric::NormalizedWasserstein => config.normalized_wasserstein,
            DriftMetric::KsPValue | DriftMetric::ChiSquaredPValue => config.p_value,
        }
    };
    let higher_is_drift = !matches!(kind, DriftMetric::KsPValue | DriftMetric::ChiSquaredPValue);
    Some((threshold, higher_is_drift))
}

/// Columns of the unpacked table that may hold the predicted value or class, in order of preference.
const PREDICTION_COLUMNS: [&str; 3] = ["prediction", "prediction_label", "prediction_class"];

/// Columns of the unpacked table holding the model's scores, for ROC AUC and log loss.
enum ScoreColumns {
    None,
    /// `prediction_score` or `prediction_probability`: a binary classifier's probability of
    /// the positive class, which is the greater of the two labels (scikit-learn's `classes_[1]`;
    /// numbers compare as numbers). Next to `prediction_label` it is the confidence in that
    /// label instead (`{"label": "NEGATIVE", "score": 0.98}`), so P(positive) is the score for a
    /// positive label and 1 − score for the other.
    Positive(String),
    /// `prediction_proba_{class}` columns, one per class.
    PerClass(Vec<String>),
}

impl ScoreColumns {
    fn find(present: &[String]) -> Self {
        if let Some(column) = present.iter().find(|c| *c == "prediction_score" || *c == "prediction_probability") {
            return ScoreColumns::Positive(column.clone());
        }
        let columns: Vec<String> = present.iter().filter(|c| c.starts_with("prediction_proba_")).cloned().collect();
        if columns.len() >= 2 { ScoreColumns::PerClass(columns) } else { ScoreColumns::None }
    }

    fn names(&self) -> &[String] {
        match self {
            ScoreColumns::None => &[],
            ScoreColumns::Positive(column) => std::slice::from_ref(column),
            ScoreColumns::PerClass(columns) => columns,
        }
    }
}

/// ROC AUC (binary) and log loss over the rows whose scores are present. `classes` are the
/// label's classes, sorted. A score outside [0, 1], a label outside the classes or a class
/// without a score column leaves the metric null.
fn score_metrics(
    scores: &ScoreColumns,
    classes: &[String],
    truth: &[Option<String>],
    values: &[Vec<Option<f64>>],
    confidence_of: Option<&[Option<String>]>,
    rows: &[usize],
) -> Vec<(&'static str, Option<f64>)> {
    let scored: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&r| truth[r].is_some() && values.iter().all(|column| column[r].is_some()))
        .collect();
    let y: Vec<&str> = scored.iter().map(|&r| truth[r].as_deref().unwrap_or_default()).collect();
    let labels: Vec<&str> = classes.iter().map(String::as_str).collect();
    let auc = |score_of: &dyn Fn(usize) -> f64| {
        let [_, positive] = labels.as_slice() else { return None };
        let is_positive: Vec<bool> = y.iter().map(|t| t == positive).collect();
        let p: Vec<f64> = scored.iter().map(|&r| score_of(r)).collect();
        inferlog_stats::roc_auc(&is_positive, &p).ok().flatten()
    };
    match scores {
        ScoreColumns::None => Vec::new(),
        ScoreColumns::Positive(_) => {
            let positive = labels.get(1).copied();
            let score = |r: usize| {
                let s = values[0][r].unwrap_or_default();
                match confidence_of {
                    Some(predicted) if predicted[r].as_deref() != positive => 1.0 - s,
                    _ => s,
                }
            };
            let probabilities: Vec<f64> = scored.iter().flat_map(|&r| [1.0 - score(r), score(r)]).collect();
            let log_loss = (labels.len() == 2).then(|| inferlog_stats::log_loss(&y, &probabilities, &labels).ok().flatten());
            vec![("roc_auc", auc(&score)), ("log_loss", log_loss.flatten())]
        }
        ScoreColumns::PerClass(columns) => {
            // The column of each class, in class order.
            let index: Option<Vec<usize>> = classes
                .iter()
                .map(|c| {
                    let name = inferlog_payload::sanitize_column_name(&format!("prediction_proba_{c}"));
                    columns.iter().position(|column| *column == name)
                })
                .collect();
            let Some(index) = index.filter(|i| i.len() >= 2) else {
                return vec![("log_loss", None)];
            };
            let probabilities: Vec<f64> =
                scored.iter().flat_map(|&r| index.iter().map(move |&i| values[i][r].unwrap_or_default())).collect();
            let mut out = vec![("log_loss", inferlog_stats::log_loss(&y, &probabilities, &labels).ok().flatten())];
            if labels.len() == 2 {
                out.push(("roc_auc", auc(&|r| values[index[1]][r].unwrap_or_default())));
            }
            out
        }
    }
}

/// Model quality per window and slice from `labeled(endpoint)`, when the baseline has a label
/// and labels exist: classification (text, boolean or whole-number labels; with ROC AUC and log
/// loss when the model's scores are in the table) or regression (fractional labels).
#[allow(clippy::too_many_arguments)]
async fn quality_metrics(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    endpoint: &str,
    constraints: &Constraints,
    present: &[String],
    since: i64,
    until: i64,
    window: i64,
    slices: &[String],
    report: &mut MonitorReport,
) -> Result<(), MonitorError> {
    let Some(label) = constraints.features.iter().find(|f| f.role == crate::baseline::Role::Label) else {
        return Ok(());
    };
    // The model's answer: `prediction` (a bare list of outputs) or the label field of a list of
    // objects such as `{"label": "setosa", "score": 0.93}`.
    let Some(predicted) = PREDICTION_COLUMNS.iter().find(|c| present.iter().any(|p| p == *c)) else {
        return Ok(());
    };
    let regression = label.inferred_type == crate::baseline::InferredType::Fractional;
    let scores = if regression { ScoreColumns::None } else { ScoreColumns::find(present) };
    let score_names = scores.names();
    let mut select = vec![
        "timestamp_ms".to_string(),
        format!("CAST(\"{predicted}\" AS VARCHAR)"),
        "CAST(label AS VARCHAR)".to_string(),
    ];
    select.extend(score_names.iter().map(|c| format!("\"{c}\"")));
    for (i, expr) in slices.iter().enumerate() {
        select.push(format!("CAST(({expr}) AS VARCHAR) AS __slice_{i}"));
    }
    let sql = format!(
        "SELECT {} FROM labeled('{endpoint}') WHERE \"{predicted}\" IS NOT NULL AND label IS NOT NULL \
         AND timestamp_ms >= {since} AND timestamp_ms < {until}",
        select.join(", ")
    );
    // No labels yet (or no prediction column): nothing to measure.
    let Ok(df) = ctx.sql(&sql).await else { return Ok(()) };
    let batches = df.collect().await?;
    let column = |index: usize| -> Vec<ArrayRef> { batches.iter().map(|b| b.column(index).clone()).collect() };
    let timestamps: Vec<i64> = values::numbers(&column(0))?.into_iter().map(|v| v.unwrap_or(0.0) as i64).collect();
    let by_time = RowsByTime::new(&timestamps);
    let predictions = values::texts(&column(1))?;
    let labels = values::texts(&column(2))?;
    let score_values: Vec<Vec<Option<f64>>> =
        (0..score_names.len()).map(|i| values::numbers(&column(3 + i))).collect::<Result<_, _>>()?;
    let first_slice = 3 + score_names.len();
    let slice_values: Vec<Vec<Option<String>>> =
        (0..slices.len()).map(|i| values::texts(&column(first_slice + i))).collect::<Result<_, _>>()?;
    // The label's classes: the baseline's domain, else those seen in this run.
    let mut classes: Vec<String> = match &label.domain {
        Some(domain) => domain.iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
        None => labels.iter().flatten().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
    };
    // Numeric classes in numeric order (10 after 9), as scikit-learn orders them.
    if let Ok(numbers) = classes.iter().map(|c| c.parse::<f64>()).collect::<Result<Vec<_>, _>>() {
        let mut pairs: Vec<(f64, String)> = numbers.into_iter().zip(classes).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        classes = pairs.into_iter().map(|(_, c)| c).collect();
    }
    let confidence_of = (*predicted == "prediction_label" && matches!(scores, ScoreColumns::Positive(_))).then_some(predictions.as_slice());
    let mut start = since;
    while start < until {
        let end = (start + window).min(until);
        for (slice_key, slice_value, rows) in window_groups(&by_time, start, end, slices, &slice_values) {
            let metric = |column: Option<String>, name: &str, value: Option<f64>| MetricRow {
                window_start_ms: start,
                window_end_ms: end,
                slice_key: slice_key.clone(),
                slice_value: slice_value.clone(),
                column_name: column,
                metric: name.to_string(),
                value,
            };
            report.profile.push(metric(None, "labeled_count", Some(rows.len() as f64)));
            let truth: Vec<String> = rows.iter().filter_map(|&r| labels[r].clone()).collect();
            let predicted: Vec<String> = rows.iter().filter_map(|&r| predictions[r].clone()).collect();
            if regression {
                let parse = |v: &[String]| v.iter().map(|s| s.parse::<f64>()).collect::<Result<Vec<_>, _>>();
                let (Ok(t), Ok(p)) = (parse(&truth), parse(&predicted)) else {
                    return Err(MonitorError::Input("regression labels and predictions must be numbers".into()));
                };
                if let Some(m) = regression_metrics(&t, &p)? {
                    for (name, value) in [("mae", Some(m.mae)), ("mse", Some(m.mse)), ("rmse", Some(m.rmse)), ("r2", m.r2), ("mape", Some(m.mape))] {
                        report.profile.push(metric(None, name, value));
                    }
                }
            } else if let Some(m) = classification_metrics(&truth, &predicted)? {
                for (name, value) in [
                    ("accuracy", m.accuracy),
                    ("precision_macro", m.macro_avg.precision),
                    ("recall_macro", m.macro_avg.recall),
                    ("f1_macro", m.macro_avg.f1),
                    ("precision_weighted", m.weighted_avg.precision),
                    ("recall_weighted", m.weighted_avg.recall),
                    ("f1_weighted", m.weighted_avg.f1),
                ] {
                    report.profile.push(metric(None, name, Some(value)));
                }
                for (name, value) in score_metrics(&scores, &classes, &labels, &score_values, confidence_of, &rows) {
                    report.profile.push(metric(None, name, value));
                }
                for (i, t) in m.labels.iter().enumerate() {
                    for (j, p) in m.labels.iter().enumerate() {
                        let cell = format!("label={t},prediction={p}");
                        report.profile.push(metric(Some(cell), "confusion_count", Some(m.confusion_matrix[i][j] as f64)));
                    }
                }
            }
        }
        start = end;
    }
    Ok(())
}

fn timestamp_array(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values.map(|ms| ms * 1000)).with_timezone("UTC"))
}

/// Names the window length of a run's rows, so runs of different lengths coexist.
pub(crate) const WINDOW_SECONDS: &str = "window_seconds";

fn window_fields() -> Vec<Field> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        // Nullable: tables written before the column existed gain it by schema merge.
        Field::new(WINDOW_SECONDS, DataType::Int64, true),
        Field::new("slice_key", DataType::Utf8, true),
        Field::new("slice_value", DataType::Utf8, true),
        Field::new("column_name", DataType::Utf8, true),
    ]
}

fn window_seconds_array(window_ms: i64, rows: usize) -> ArrayRef {
    Arc::new(Int64Array::from_value(window_ms / 1000, rows))
}

fn metric_columns(rows: &[&MetricRow], window_ms: i64) -> Vec<ArrayRef> {
    vec![
        timestamp_array(rows.iter().map(|r| r.window_start_ms)),
        timestamp_array(rows.iter().map(|r| r.window_end_ms)),
        window_seconds_array(window_ms, rows.len()),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.slice_key.as_deref()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.slice_value.as_deref()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.column_name.as_deref()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.metric.as_str()))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
    ]
}

fn metric_schema(extra: Vec<Field>) -> SchemaRef {
    let mut fields = window_fields();
    fields.push(Field::new("metric", DataType::Utf8, false));
    fields.push(Field::new("value", DataType::Float64, true));
    fields.extend(extra);
    Arc::new(Schema::new(fields))
}

/// Replaces, in the three tables (one commit each), the rows of the windows in `[since, until)`
/// that have this run's window length and belong to the whole window or one of its slices:
/// runs of other window lengths or other slices keep their rows. Rows written before
/// `window_seconds` existed (null) count as this run's and are replaced.
#[allow(clippy::too_many_arguments)]
async fn write_tables(
    layout: &Layout,
    endpoint: &str,
    since: i64,
    until: i64,
    window_ms: i64,
    slices: &[String],
    report: &MonitorReport,
) -> Result<(), MonitorError> {
    let profile_rows: Vec<&MetricRow> = report.profile.iter().collect();
    let profile = RecordBatch::try_new(metric_schema(vec![]), metric_columns(&profile_rows, window_ms))?;
    let drift_rows: Vec<&MetricRow> = report.drift.iter().map(|d| &d.metric).collect();
    let mut drift_columns = metric_columns(&drift_rows, window_ms);
    drift_columns.push(Arc::new(StringArray::from_iter_values(report.drift.iter().map(|d| d.compared_to))));
    drift_columns.push(Arc::new(Float64Array::from_iter(report.drift.iter().map(|d| d.threshold))));
    drift_columns.push(Arc::new(BooleanArray::from_iter(report.drift.iter().map(|d| Some(d.drifted)))));
    let drift_schema = metric_schema(vec![
        Field::new("compared_to", DataType::Utf8, false),
        Field::new("threshold", DataType::Float64, true),
        Field::new("drifted", DataType::Boolean, false),
    ]);
    let drift = RecordBatch::try_new(drift_schema, drift_columns)?;
    let v = &report.violations;
    let mut violation_fields = window_fields();
    violation_fields.push(Field::new("check", DataType::Utf8, false));
    violation_fields.push(Field::new("description", DataType::Utf8, false));
    let violations = RecordBatch::try_new(
        Arc::new(Schema::new(violation_fields)),
        vec![
            timestamp_array(v.iter().map(|r| r.window_start_ms)),
            timestamp_array(v.iter().map(|r| r.window_end_ms)),
            window_seconds_array(window_ms, v.len()),
            Arc::new(StringArray::from_iter(v.iter().map(|r| r.slice_key.as_deref()))),
            Arc::new(StringArray::from_iter(v.iter().map(|r| r.slice_value.as_deref()))),
            Arc::new(StringArray::from_iter(v.iter().map(|r| r.column_name.as_deref()))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|r| r.check))),
            Arc::new(StringArray::from_iter_values(v.iter().map(|r| r.description.as_str()))),
        ],
    )?;
    let at = |ms: i64| lit(deltalake::datafusion::scalar::ScalarValue::TimestampMicrosecond(Some(ms * 1000), Some("UTC".into())));
    let own_length = col(WINDOW_SECONDS).eq(lit(window_ms / 1000)).or(col(WINDOW_SECONDS).is_null());
    let own_slices = slices
        .iter()
        .fold(col("slice_key").is_null(), |any, slice| any.or(col("slice_key").eq(lit(slice.clone()))));
    let replaced = col("window_start").gt_eq(at(since)).and(col("window_start").lt(at(until))).and(own_length).and(own_slices);
    for (suffix, batch) in [("profile_metrics", profile), ("drift_metrics", drift), ("violations", violations)] {
        let url = layout.table(&format!("{endpoint}_{suffix}"));
        let table = inferlog_table::table::open_or_create_with(&url, batch.schema().as_ref(), &[], 100).await?;
        table
            .write(vec![batch])
            .with_save_mode(SaveMode::Overwrite)
            // Tables written before `window_seconds` existed gain it here.
            .with_schema_mode(SchemaMode::Merge)
            .with_replace_where(replaced.clone())
            .await
            .map_err(|e| MonitorError::Input(format!("cannot write {endpoint}_{suffix}: {e}")))?;
    }
    Ok(())
}
