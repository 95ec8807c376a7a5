//! `inferlog report`: gathers what [`crate::report_html`] draws: the baseline against the
//! current period's data for each monitored column, drift and quality over time from the metric
//! tables, and the violations.

use inferlog_core::Layout;
use crate::baseline::{Constraints, FeatureConstraints, MonitoringFiles, Role, Statistics, CONSTRAINTS_FILE, STATISTICS_FILE};
use crate::monitor::{drift_values, read_reference, threshold_for, ColumnData, Prepared};
use crate::report_html::{Distribution, DriftSummary, FeatureReport, ReportData, Series, ViolationRow};
use crate::{values, MonitorError};
use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::datafusion::prelude::SessionContext;
use inferlog_stats::{sturges_edges, Histogram, SortedSample};
use std::collections::BTreeMap;

/// Metrics of the whole window shown under "Quality over time", in this order, when present.
const QUALITY_METRICS: [&str; 14] = [
    "row_count",
    "labeled_count",
    "accuracy",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "roc_auc",
    "log_loss",
    "mae",
    "rmse",
    "mse",
    "r2",
    "mape",
];
/// Per-column data-quality rates, shown when any window has a non-zero value.
const RATE_METRICS: [&str; 4] = ["null_rate", "type_error_rate", "out_of_range_rate", "unknown_category_rate"];

pub struct ReportOptions {
    /// The current period: `[since, until)`, Unix milliseconds.
    pub since_ms: i64,
    pub until_ms: i64,
}

/// Collects the report of `endpoint` over the period.
pub async fn build(layout: &Layout, endpoint: &str, options: &ReportOptions) -> Result<ReportData, MonitorError> {
    let (since, until) = (options.since_ms, options.until_ms);
    if since >= until {
        return Err(MonitorError::Input("--since must be before --until".into()));
    }
    let files = MonitoringFiles::of(layout, endpoint)?;
    let constraints: Constraints = files.read_json(endpoint, CONSTRAINTS_FILE).await?;
    let statistics: Statistics = files.read_json(endpoint, STATISTICS_FILE).await?;
    let ctx = inferlog_query::session_with(layout, None, &|table| table.strip_prefix(endpoint).is_some_and(|rest| {
        ["_payload", "_unpacked", "_labels", "_profile_metrics", "_drift_metrics", "_violations"].contains(&rest)
    }))
    .await?;
    let unpacked = format!("{endpoint}_unpacked");
    let present: Vec<String> = match ctx.table(unpacked.as_str()).await {
        Ok(df) => df.schema().fields().iter().map(|f| f.name().clone()).collect(),
        Err(_) => Vec::new(),
    };
    let shown: Vec<&FeatureConstraints> = constraints
        .features
        .iter()
        .filter(|f| f.role != Role::Label && present.contains(&f.name))
        .collect();
    let reference = read_reference(&files.read_reference().await?, &shown)?;
    let mut current_rows = 0;
    let mut current: Vec<ColumnData> = Vec::new();
    if !shown.is_empty() {
        let columns: Vec<String> = shown.iter().map(|f| format!("\"{}\"", f.name)).collect();
        let batches = collect_or_empty(
            &ctx,
            &format!(
                "SELECT {} FROM \"{unpacked}\" WHERE row_index IS NOT NULL AND timestamp_ms >= {since} AND timestamp_ms < {until}",
                columns.join(", ")
            ),
        )
        .await?;
        current_rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        current = shown
            .iter()
            .enumerate()
            .map(|(i, f)| ColumnData::read(&column(&batches, i), f))
            .collect::<Result<_, _>>()?;
    }
    let mut features = Vec::new();
    for (i, f) in shown.iter().enumerate() {
        let (reference, current) = (reference[i].prepare_all()?, current[i].prepare_all()?);
        let decisive = f.drift.metric.name();
        let drift = drift_values(&reference, &current)
            .into_iter()
            .find(|(metric, _)| *metric == decisive)
            .and_then(|(metric, value)| {
                let value = value?;
                let (threshold, higher_is_drift) = threshold_for(&constraints, f, metric)?;
                let drifted = if higher_is_drift { value >= threshold } else { value < threshold };
                Some(DriftSummary { metric: metric.to_string(), value, threshold, drifted })
            });
        features.push(FeatureReport {
            name: f.name.clone(),
            role: if f.role == Role::Prediction { "prediction" } else { "input" }.to_string(),
            distribution: distribution(&reference, &current),
            drift,
        });
    }

    let period = format!("window_start >= to_timestamp_millis({since}) AND window_start < to_timestamp_millis({until})");
    // One window length per chart: runs of several lengths over one period would otherwise
    // draw hourly and one-minute windows on one line. The shortest is the most detailed.
    let period = match shortest_window_seconds(&ctx, endpoint, &period).await {
        Some(seconds) => format!("{period} AND (window_seconds = {seconds} OR window_seconds IS NULL)"),
        None => period,
    };
    let window_filter = format!("{period} AND slice_key IS NULL");
    let drift_batches = collect_or_empty(
        &ctx,
        &format!(
            "SELECT CAST(window_start AS BIGINT) / 1000, column_name, metric, value, threshold \
             FROM \"{endpoint}_drift_metrics\" WHERE {window_filter} AND compared_to = 'baseline' ORDER BY 1"
        ),
    )
    .await?;
    let drift_rows = metric_rows(&drift_batches, true)?;
    let mut drift_series = Vec::new();
    for f in &constraints.features {
        let metric = f.drift.metric.name();
        let rows: Vec<&MetricPoint> =
            drift_rows.iter().filter(|r| r.column.as_deref() == Some(f.name.as_str()) && r.metric == metric).collect();
        if rows.is_empty() {
            continue;
        }
        drift_series.push(Series {
            title: format!("{} · {metric}", f.name),
            points: points(&rows),
            threshold: rows.last().and_then(|r| r.threshold),
            higher_is_bad: !metric.ends_with("p_value"),
        });
    }

    let profile_batches = collect_or_empty(
        &ctx,
        &format!(
            "SELECT CAST(window_start AS BIGINT) / 1000, column_name, metric, value \
             FROM \"{endpoint}_profile_metrics\" WHERE {window_filter} ORDER BY 1"
        ),
    )
    .await?;
    let profile_rows = metric_rows(&profile_batches, false)?;
    let mut quality_series = Vec::new();
    for metric in QUALITY_METRICS {
        let rows: Vec<&MetricPoint> = profile_rows.iter().filter(|r| r.column.is_none() && r.metric == metric).collect();
        if !rows.is_empty() {
            quality_series.push(Series { title: metric.to_string(), points: points(&rows), threshold: None, higher_is_bad: true });
        }
    }
    for f in &constraints.features {
        for metric in RATE_METRICS {
            let rows: Vec<&MetricPoint> = profile_rows
                .iter()
                .filter(|r| r.column.as_deref() == Some(f.name.as_str()) && r.metric == metric)
                .collect();
            if rows.iter().any(|r| r.value.is_some_and(|v| v > 0.0)) {
                let threshold = (metric == "null_rate").then_some(1.0 - f.completeness);
                quality_series.push(Series { title: format!("{} · {metric}", f.name), points: points(&rows), threshold, higher_is_bad: true });
            }
        }
    }

    let violation_batches = collect_or_empty(
        &ctx,
        &format!(
            "SELECT CAST(window_start AS BIGINT) / 1000, CAST(window_end AS BIGINT) / 1000, slice_key, slice_value, \
             column_name, \"check\", description FROM \"{endpoint}_violations\" WHERE {period}"
        ),
    )
    .await?;
    let violations = violation_rows(&violation_batches)?;

    Ok(ReportData {
        endpoint: endpoint.to_string(),
        generated_at_ms: chrono::Utc::now().timestamp_millis(),
        current_since_ms: since,
        current_until_ms: until,
        reference_rows: statistics.item_count,
        current_rows,
        features,
        drift_series,
        quality_series,
        violations,
    })
}

/// Runs `sql`; a table that does not exist yet (no monitoring run) gives no rows.
/// The shortest window length of the profile rows in `period`; `None` without rows or for
/// tables written before `window_seconds` existed.
async fn shortest_window_seconds(ctx: &SessionContext, endpoint: &str, period: &str) -> Option<i64> {
    let sql = format!("SELECT MIN(window_seconds) FROM \"{endpoint}_profile_metrics\" WHERE {period}");
    let batches = ctx.sql(&sql).await.ok()?.collect().await.ok()?;
    use deltalake::arrow::array::Array;
    let values = batches.first()?.column(0).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>()?.clone();
    (!values.is_empty() && values.is_valid(0)).then(|| values.value(0))
}

async fn collect_or_empty(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, MonitorError> {
    match ctx.sql(sql).await {
        Ok(df) => Ok(df.collect().await?),
        Err(e) if e.to_string().contains("not found") => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn column(batches: &[RecordBatch], index: usize) -> Vec<ArrayRef> {
    batches.iter().map(|b| b.column(index).clone()).collect()
}

/// Shares of the reference and the current values: over Sturges bins of both samples together
/// for numbers, per category (in order of combined share) for text.
fn distribution(reference: &Prepared, current: &Prepared) -> Distribution {
    match (reference, current) {
        (Prepared::Numeric(r), Prepared::Numeric(c)) => {
            let edges = sturges_edges(&[r, c]).unwrap_or_default();
            let shares = |sample: &SortedSample| {
                let histogram = Histogram::with_edges(sample, edges.clone());
                histogram.shares().unwrap_or_else(|| vec![0.0; histogram.counts.len()])
            };
            Distribution::Numeric { reference: shares(r), current: shares(c), edges }
        }
        (Prepared::Text(rc), Prepared::Text(cc)) => {
            let share = |counts: &BTreeMap<String, u64>, key: &String| {
                let total: u64 = counts.values().sum();
                if total == 0 { 0.0 } else { counts.get(key).copied().unwrap_or(0) as f64 / total as f64 }
            };
            let mut categories: Vec<String> = rc.keys().chain(cc.keys()).cloned().collect();
            categories.sort();
            categories.dedup();
            categories.sort_by(|a, b| (share(rc, b) + share(cc, b)).total_cmp(&(share(rc, a) + share(cc, a))));
            Distribution::Categorical {
                reference: categories.iter().map(|k| share(rc, k)).collect(),
                current: categories.iter().map(|k| share(cc, k)).collect(),
                categories,
            }
        }
        _ => Distribution::Categorical { categories: Vec::new(), reference: Vec::new(), current: Vec::new() },
    }
}

struct MetricPoint {
    window_start_ms: i64,
    column: Option<String>,
    metric: String,
    value: Option<f64>,
    threshold: Option<f64>,
}

/// Rows of `(window_start_ms, column_name, metric, value[, threshold])`.
fn metric_rows(batches: &[RecordBatch], with_threshold: bool) -> Result<Vec<MetricPoint>, MonitorError> {
    let starts = values::numbers(&column(batches, 0))?;
    let columns = values::texts(&column(batches, 1))?;
    let metrics = values::texts(&column(batches, 2))?;
    let values_ = values::numbers(&column(batches, 3))?;
    let thresholds = if with_threshold { values::numbers(&column(batches, 4))? } else { vec![None; starts.len()] };
    Ok((0..starts.len())
        .map(|i| MetricPoint {
            window_start_ms: starts[i].unwrap_or_default() as i64,
            column: columns[i].clone(),
            metric: metrics[i].clone().unwrap_or_default(),
            value: values_[i],
            threshold: thresholds[i],
        })
        .collect())
}

/// One point per window (the first row of a window wins if runs of other window lengths left
/// more than one).
fn points(rows: &[&MetricPoint]) -> Vec<(i64, f64)> {
    let mut by_window: BTreeMap<i64, f64> = BTreeMap::new();
    for row in rows {
        if let Some(value) = row.value {
            by_window.entry(row.window_start_ms).or_insert(value);
        }
    }
    by_window.into_iter().collect()
}

fn violation_rows(batches: &[RecordBatch]) -> Result<Vec<ViolationRow>, MonitorError> {
    let starts = values::numbers(&column(batches, 0))?;
    let ends = values::numbers(&column(batches, 1))?;
    let slice_keys = values::texts(&column(batches, 2))?;
    let slice_values = values::texts(&column(batches, 3))?;
    let columns = values::texts(&column(batches, 4))?;
    let checks = values::texts(&column(batches, 5))?;
    let descriptions = values::texts(&column(batches, 6))?;
    Ok((0..starts.len())
        .map(|i| ViolationRow {
            window_start_ms: starts[i].unwrap_or_default() as i64,
            window_end_ms: ends[i].unwrap_or_default() as i64,
            slice: slice_keys[i].as_ref().map(|k| format!("{k} = {}", slice_values[i].as_deref().unwrap_or("null"))),
            column: columns[i].clone(),
            check: checks[i].clone().unwrap_or_default(),
            description: descriptions[i].clone().unwrap_or_default(),
        })
        .collect())
}
