//! A monitoring report for one endpoint as a single HTML page: summary cards, reference vs
//! current distributions per feature, drift and quality over time, and the violations table.
//!
//! The page is self-contained (inline CSS, charts as inline SVG with `<title>` tooltips, no
//! scripts, fonts or images from anywhere) so it can be attached to a ticket or mailed and still
//! opens offline, exactly as rendered. Rendering is pure and deterministic: the same
//! [`ReportData`] always gives the same bytes, so reports can be diffed and tested.

use chrono::DateTime;
use std::fmt::{self, Write as _};

/// Everything the page shows; times are Unix milliseconds (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub endpoint: String,
    pub generated_at_ms: i64,
    /// The period the "current" distributions were taken from.
    pub current_since_ms: i64,
    pub current_until_ms: i64,
    pub reference_rows: u64,
    pub current_rows: u64,
    pub features: Vec<FeatureReport>,
    /// Drift of each feature against the baseline over time (one series per feature).
    pub drift_series: Vec<Series>,
    /// Data and model quality over time: row_count, null rates, accuracy, f1_macro, mae, ...
    pub quality_series: Vec<Series>,
    pub violations: Vec<ViolationRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureReport {
    pub name: String,
    /// "input", "prediction" (free text role shown as a small badge)
    pub role: String,
    pub distribution: Distribution,
    /// The deciding drift metric for this feature in the latest window, if computed.
    pub drift: Option<DriftSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// `edges.len() == reference.len() + 1 == current.len() + 1`; reference/current are shares (sum 1, or all 0 if empty).
    Numeric { edges: Vec<f64>, reference: Vec<f64>, current: Vec<f64> },
    /// Same length vectors; shares of each category.
    Categorical { categories: Vec<String>, reference: Vec<f64>, current: Vec<f64> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftSummary {
    pub metric: String, // e.g. "normalized_wasserstein", "ks_p_value", "jensen_shannon", "chi_squared_p_value", "psi"
    pub value: f64,
    pub threshold: f64,
    pub drifted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub title: String,           // e.g. "sepal_length_cm · normalized_wasserstein" or "accuracy"
    pub points: Vec<(i64, f64)>, // (window_start_ms, value), sorted by time; may be empty or a single point
    pub threshold: Option<f64>,  // drawn as a dashed horizontal line when present
    /// true when values above the threshold are bad (distances), false when below is bad (p-values)
    pub higher_is_bad: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ViolationRow {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub slice: Option<String>, // e.g. "model_version = 2"; None = whole table
    pub column: Option<String>,
    pub check: String, // e.g. "baseline_drift_check"
    pub description: String,
}

const REF: &str = "#8fa7c4";
const CUR: &str = "#e8853d";
const LINE: &str = "#3b6ea5";
const BAD: &str = "#d03b3b";
/// More bars than this make a small chart unreadable; the rest are summed into a note.
const MAX_CATEGORIES: usize = 20;
/// Keeps the page light enough to open on any machine, however noisy the checks.
const MAX_VIOLATIONS: usize = 500;
const W: f64 = 360.0;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const CSS: &str = "\
:root{--ink:#1f2933;--muted:#667085;--line:#e4e7ec;--bad:#d03b3b;--ok:#2f8a57}
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:var(--ink);font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:28px 24px 48px}
.brand{font-size:12px;font-weight:600;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
h1{font-size:24px;margin:2px 0 4px;word-break:break-word}
h2{font-size:17px;margin:0 0 2px}
h3{font-size:14px;margin:0;display:flex;gap:6px;align-items:center;flex-wrap:wrap;word-break:break-word}
.sub,.meta,.note{color:var(--muted)}
.meta{font-size:12px;margin:3px 0 6px}.note{font-size:12px;margin:6px 0 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;margin-top:18px}
.card,.panel,.empty,table{background:#fff;border:1px solid var(--line);border-radius:8px}
.card{padding:12px 16px}.card .k{font-size:12px;color:var(--muted)}
.card .v{font-size:26px;font-weight:600;line-height:1.2}.card .s{font-size:12px;color:var(--muted)}
.card.alert{border-color:#f3b8b8;background:#fff8f8}.card.alert .v{color:var(--bad)}
section{margin-top:34px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;margin-top:12px}
.panel{padding:12px 14px 10px}.empty{padding:14px 16px;margin-top:12px;color:var(--muted);border-style:dashed}
.badge{font-size:11px;font-weight:600;padding:1px 8px;border-radius:999px;background:#eef1f5;color:#475467}
.badge.drifted{background:#fde8e8;color:var(--bad)}.badge.ok{background:#e6f4ec;color:var(--ok)}
.right{margin-left:auto}.bad{color:var(--bad);font-weight:600;white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef1f5;padding:1px 5px;border-radius:4px}
svg.chart{display:block;width:100%;height:auto;overflow:visible}
svg text{font-size:10px;fill:#667085}svg .lg{fill:#344054}svg .nodata{font-size:12px;text-anchor:middle}
.grid-line{stroke:#eef0f3}.axis{stroke:#98a2b3}.hit{fill:#000;fill-opacity:0}.hit:hover{fill-opacity:.05}
.pt:hover{r:5}
table{border-collapse:separate;border-spacing:0;width:100%;margin-top:12px;font-size:13px;overflow:hidden}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f9fafb;font-weight:600;color:#475467;font-size:12px}tr:last-child td{border-bottom:0}
td.when{white-space:nowrap;color:#475467}td .none{color:#98a2b3}
";

/// Writes to a `String`, which cannot fail.
macro_rules! w {
    ($o:expr, $($t:tt)*) => {{ let _ = write!($o, $($t)*); }};
}

/// The complete HTML document.
pub fn render(data: &ReportData) -> String {
    let mut o = String::with_capacity(64 << 10);
    w!(o, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    w!(o, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let ep = esc(&data.endpoint);
    w!(o, "<title>Inferlog report — {ep}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n");
    header(&mut o, data);
    distributions(&mut o, data);
    let domain = time_domain(data);
    let no_runs = format!("No monitoring runs yet: run <code>inferlog monitor {ep}</code>.");
    let drift_intro = "Drift of each feature against the baseline, per window. Red points cross the threshold.";
    series_section(&mut o, "Drift over time", drift_intro, &data.drift_series, domain, &no_runs);
    let quality_intro = "Data and model quality per window.";
    series_section(&mut o, "Quality over time", quality_intro, &data.quality_series, domain, &no_runs);
    violations(&mut o, data, &no_runs);
    o.push_str("</main>\n</body>\n</html>\n");
    o
}

fn header(o: &mut String, d: &ReportData) {
    let drifted = d.features.iter().filter(|f| f.drift.as_ref().is_some_and(|x| x.drifted)).count();
    let measured = d.features.iter().filter(|f| f.drift.is_some()).count();
    w!(o, "<header>\n<div class=\"brand\">Inferlog monitoring report</div>\n<h1>{}</h1>\n", esc(&d.endpoint));
    let period = fmt_range(d.current_since_ms, d.current_until_ms);
    w!(o, "<div class=\"sub\">Generated {} · current period {period}</div>\n", fmt_time(d.generated_at_ms));
    o.push_str("<div class=\"cards\">\n");
    card(o, "Reference rows", &fmt_count(d.reference_rows), "baseline", false);
    card(o, "Current rows", &fmt_count(d.current_rows), "current period", false);
    card(o, "Drifted features", &drifted.to_string(), &format!("of {measured} measured"), drifted > 0);
    card(o, "Violations", &fmt_count(d.violations.len() as u64), "failed checks", !d.violations.is_empty());
    o.push_str("</div>\n</header>\n");
}

fn card(o: &mut String, key: &str, value: &str, sub: &str, alert: bool) {
    let class = if alert { "card alert" } else { "card" };
    w!(o, "<div class=\"{class}\"><div class=\"k\">{key}</div><div class=\"v\">{value}</div><div class=\"s\">{sub}</div></div>\n");
}

fn section_open(o: &mut String, title: &str, intro: &str) {
    w!(o, "<section>\n<h2>{title}</h2>\n<div class=\"sub\">{intro}</div>\n");
}

fn distributions(o: &mut String, d: &ReportData) {
    section_open(o, "Distributions", "Share of rows per bin or category: reference (baseline) vs the current period.");
    if d.features.is_empty() {
        let ep = esc(&d.endpoint);
        w!(o, "<p class=\"empty\">No feature distributions yet: build a baseline with <code>inferlog baseline {ep}</code>, ");
        w!(o, "then run <code>inferlog monitor {ep}</code>.</p>\n</section>\n");
        return;
    }
    o.push_str("<div class=\"grid\">\n");
    for f in &d.features {
        let (class, label) = match &f.drift {
            Some(x) if x.drifted => ("drifted", "drifted"),
            Some(_) => ("ok", "no drift"),
            None => ("", "not measured"),
        };
        w!(o, "<div class=\"panel\">\n<h3>{}<span class=\"badge\">{}</span>", esc(&f.name), esc(&f.role));
        w!(o, "<span class=\"badge {class} right\">{label}</span></h3>\n");
        match &f.drift {
            Some(x) => {
                let (metric, value, threshold) = (esc(&x.metric), fmt_value(x.value), fmt_value(x.threshold));
                w!(o, "<div class=\"meta\">{metric} = <b>{value}</b> · threshold {threshold}</div>\n");
            }
            None => o.push_str("<div class=\"meta\">No drift metric for the latest window.</div>\n"),
        }
        match &f.distribution {
            Distribution::Numeric { edges, reference, current } => numeric_chart(o, &f.name, edges, reference, current),
            Distribution::Categorical { categories, reference, current } => categorical_chart(o, &f.name, categories, reference, current),
        }
        o.push_str("</div>\n");
    }
    o.push_str("</div>\n</section>\n");
}

/// A share as drawn, within 0..=1: missing or non-finite shares count as nothing.
fn share(v: &[f64], i: usize) -> f64 {
    v.get(i).copied().filter(|x| x.is_finite()).map_or(0.0, |x| x.clamp(0.0, 1.0))
}

fn numeric_chart(o: &mut String, name: &str, edges: &[f64], reference: &[f64], current: &[f64]) {
    let n = reference.len().max(current.len());
    // Malformed edges still get a chart, by bin number, rather than a broken one.
    let valid = n > 0
        && edges.len() == n + 1
        && edges.iter().all(|e| e.is_finite())
        && edges.windows(2).all(|p| p[0] <= p[1])
        && edges[n] > edges[0]
        && (edges[n] - edges[0]).is_finite();
    let edge = |i: usize| if valid { edges[i] } else { i as f64 };
    let fr = Frame { h: 190.0, left: 40.0, bottom: 24.0 };
    svg_open(o, &fr, &format!("Distribution of {name}: reference vs current"));
    legend(o, &[(Key::Fill(REF), "reference".into()), (Key::Outline(CUR), "current".into())]);
    if n == 0 {
        return no_data(o, &fr);
    }
    let max = (0..n).map(|i| share(reference, i).max(share(current, i))).fold(0.0, f64::max);
    let ys = y_axis(o, &fr, 0.0, max * 100.0, "%");
    let xs = Scale { d0: edge(0), d1: edge(n), r0: fr.x0(), r1: fr.x1() };
    let (base, bin) = (ys.at(0.0), |i: usize| (xs.at(edge(i)), xs.at(edge(i + 1))));
    for i in 0..n {
        let ((x0, x1), y) = (bin(i), ys.at(share(reference, i) * 100.0));
        w!(o, "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"", P(x0), P(y), P(x1 - x0), P(base - y));
        w!(o, " fill=\"{REF}\" fill-opacity=\".75\" stroke=\"#fff\" stroke-width=\".5\"/>");
    }
    // Current as an outlined step, so both distributions stay visible where they overlap.
    w!(o, "\n<path d=\"M{} {}", P(xs.at(edge(0))), P(base));
    for i in 0..n {
        let ((_, x1), y) = (bin(i), ys.at(share(current, i) * 100.0));
        w!(o, "V{}H{}", P(y), P(x1));
    }
    w!(o, "V{}\" fill=\"none\" stroke=\"{CUR}\" stroke-width=\"1.8\" stroke-linejoin=\"round\"/>\n", P(base));
    for i in 0..n {
        let (x0, x1) = bin(i);
        // The last bin includes its upper edge, as the histogram counts it.
        let close = if i + 1 == n { ']' } else { ')' };
        let range = if valid { format!("[{}, {}{close}", fmt_value(edge(i)), fmt_value(edge(i + 1))) } else { format!("bin {}", i + 1) };
        let title = format!("{range}: reference {}, current {}", fmt_pct(share(reference, i)), fmt_pct(share(current, i)));
        hit(o, x0, fr.top(), x1 - x0, base - fr.top(), &title);
    }
    x_base(o, &fr);
    if valid {
        let (_, _, step) = nice_scale(edge(0), edge(n), 5);
        for t in ticks(edge(0), edge(n), step) {
            x_tick(o, &fr, xs.at(t), &fmt_tick(t, step, edge(0).abs().max(edge(n).abs())), None);
        }
    } else {
        for i in (0..=n).step_by(n.div_ceil(5)) {
            x_tick(o, &fr, xs.at(i as f64), &i.to_string(), None);
        }
    }
    o.push_str("</svg>\n");
}

fn categorical_chart(o: &mut String, name: &str, categories: &[String], reference: &[f64], current: &[f64]) {
    let total = |i: usize| share(reference, i) + share(current, i);
    let mut order: Vec<usize> = (0..categories.len()).collect();
    // Stable, so equal shares keep the caller's order and the output stays deterministic.
    order.sort_by(|&a, &b| total(b).total_cmp(&total(a)));
    let (shown, hidden) = order.split_at(order.len().min(MAX_CATEGORIES));
    let rotate = shown.len() > 6;
    let fr = Frame { h: if rotate { 236.0 } else { 190.0 }, left: 40.0, bottom: if rotate { 70.0 } else { 24.0 } };
    svg_open(o, &fr, &format!("Categories of {name}: reference vs current"));
    legend(o, &[(Key::Fill(REF), "reference".into()), (Key::Fill(CUR), "current".into())]);
    if shown.is_empty() {
        no_data(o, &fr);
    } else {
        let max = shown.iter().map(|&i| share(reference, i).max(share(current, i))).fold(0.0, f64::max);
        let ys = y_axis(o, &fr, 0.0, max * 100.0, "%");
        let (slot, base) = ((fr.x1() - fr.x0()) / shown.len() as f64, ys.at(0.0));
        let bar = (slot * 0.38).min(18.0);
        for (k, &i) in shown.iter().enumerate() {
            let mid = fr.x0() + slot * (k as f64 + 0.5);
            for (x, v, color) in [(mid - bar, share(reference, i), REF), (mid, share(current, i), CUR)] {
                let y = ys.at(v * 100.0);
                w!(o, "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{color}\" rx=\"1\"/>", P(x), P(y), P(bar), P(base - y));
            }
            let title = format!("{}: reference {}, current {}", categories[i], fmt_pct(share(reference, i)), fmt_pct(share(current, i)));
            hit(o, mid - slot / 2.0, fr.top(), slot, base - fr.top(), &title);
        }
        x_base(o, &fr);
        for (k, &i) in shown.iter().enumerate() {
            let x = fr.x0() + slot * (k as f64 + 0.5);
            if rotate {
                let (x, y, label) = (P(x + 3.0), P(fr.base() + 10.0), esc(&truncate(&categories[i], 13)));
                w!(o, "<text transform=\"translate({x} {y}) rotate(-55)\" text-anchor=\"end\">{label}</text>");
            } else {
                x_tick(o, &fr, x, &truncate(&categories[i], (slot / 6.0) as usize), None);
            }
        }
    }
    o.push_str("</svg>\n");
    if !hidden.is_empty() {
        let (r, c) = hidden.iter().fold((0.0, 0.0), |(r, c), &i| (r + share(reference, i), c + share(current, i)));
        w!(o, "<p class=\"note\">{} more categories (other) not shown: {} of reference, {} of current.</p>\n", hidden.len(), fmt_pct(r), fmt_pct(c));
    }
}

/// One time range for every chart over time, so windows line up across panels.
fn time_domain(d: &ReportData) -> (i64, i64) {
    let times = d.drift_series.iter().chain(&d.quality_series).flat_map(|s| &s.points).filter(|p| p.1.is_finite()).map(|p| p.0);
    let (lo, hi) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (d.current_since_ms.min(d.current_until_ms), d.current_since_ms.max(d.current_until_ms)) };
    if lo == hi { (lo.saturating_sub(HOUR), hi.saturating_add(HOUR)) } else { (lo, hi) }
}

fn series_section(o: &mut String, title: &str, intro: &str, series: &[Series], domain: (i64, i64), empty: &str) {
    section_open(o, title, intro);
    if series.is_empty() {
        w!(o, "<p class=\"empty\">{empty}</p>\n</section>\n");
        return;
    }
    o.push_str("<div class=\"grid\">\n");
    for s in series {
        line_panel(o, s, domain);
    }
    o.push_str("</div>\n</section>\n");
}

fn line_panel(o: &mut String, s: &Series, (t0, t1): (i64, i64)) {
    let pts: Vec<(i64, f64)> = s.points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let thr = s.threshold.filter(|t| t.is_finite());
    let bad = |v: f64| thr.is_some_and(|t| if s.higher_is_bad { v > t } else { v < t });
    let side = if s.higher_is_bad { "above" } else { "below" };
    w!(o, "<div class=\"panel\">\n<h3>{}</h3>\n<div class=\"meta\">", esc(&s.title));
    match pts.last() {
        Some(&(t, v)) => w!(o, "latest <b>{}</b> ({})", fmt_value(v), fmt_ms(t, "%b %d %H:%M")),
        None => o.push_str("no values"),
    }
    if let Some(t) = thr {
        w!(o, " · threshold {}", fmt_value(t));
        let n = pts.iter().filter(|p| bad(p.1)).count();
        if n > 0 {
            w!(o, " · <span class=\"bad\">{n} of {} {side}</span>", pts.len());
        }
    }
    o.push_str("</div>\n");
    let fr = Frame { h: 190.0, left: 44.0, bottom: 34.0 };
    svg_open(o, &fr, &format!("{} over time", s.title));
    let mut keys = vec![(Key::Line(LINE), "value".to_string())];
    if let Some(t) = thr {
        keys.push((Key::Dash(BAD), format!("threshold {}", fmt_value(t))));
        keys.push((Key::Dot(BAD), format!("{side} threshold")));
    }
    legend(o, &keys);
    if pts.is_empty() {
        return no_data(o, &fr);
    }
    let (lo, hi) = pts.iter().map(|p| p.1).chain(thr).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let ys = y_axis(o, &fr, lo, hi, "");
    let xs = Scale { d0: t0 as f64, d1: t1 as f64, r0: fr.x0(), r1: fr.x1() };
    time_axis(o, &fr, &xs, t0, t1);
    if let Some(t) = thr {
        let y = P(ys.at(t));
        w!(o, "<line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{BAD}\"", P(fr.x0()), P(fr.x1()));
        w!(o, " stroke-width=\"1.2\" stroke-dasharray=\"5 4\" opacity=\".8\"/>\n");
    }
    o.push_str("<path d=\"");
    for (k, &(t, v)) in pts.iter().enumerate() {
        w!(o, "{}{} {}", if k == 0 { "M" } else { "L" }, P(xs.at(t as f64)), P(ys.at(v)));
    }
    w!(o, "\" fill=\"none\" stroke=\"{LINE}\" stroke-width=\"1.8\" stroke-linejoin=\"round\"/>\n");
    let r = if pts.len() > 120 { 1.6 } else { 2.6 };
    for &(t, v) in &pts {
        let (color, r) = if bad(v) { (BAD, r + 1.0) } else { (LINE, r) };
        let (x, y, when) = (P(xs.at(t as f64)), P(ys.at(v)), fmt_ms(t, "%Y-%m-%d %H:%M"));
        w!(o, "<circle class=\"pt\" cx=\"{x}\" cy=\"{y}\" r=\"{r}\" fill=\"{color}\"><title>{when}: {}</title></circle>", fmt_value(v));
    }
    o.push_str("\n</svg>\n</div>\n");
}

fn violations(o: &mut String, d: &ReportData, no_runs: &str) {
    section_open(o, "Violations", "Failed checks per window, newest first.");
    if d.violations.is_empty() {
        let ran = !d.drift_series.is_empty() || !d.quality_series.is_empty();
        let msg = if ran { "No violations: every check passed in the monitored windows." } else { no_runs };
        w!(o, "<p class=\"empty\">{msg}</p>\n</section>\n");
        return;
    }
    let mut rows: Vec<&ViolationRow> = d.violations.iter().collect();
    rows.sort_by_key(|v| std::cmp::Reverse((v.window_start_ms, v.window_end_ms)));
    o.push_str("<table>\n<thead><tr><th>Window (UTC)</th><th>Slice</th><th>Column</th><th>Check</th><th>Description</th></tr></thead>\n<tbody>\n");
    let opt = |v: &Option<String>, none: &str| v.as_deref().map_or_else(|| format!("<span class=\"none\">{none}</span>"), esc);
    for v in rows.iter().take(MAX_VIOLATIONS) {
        let window = fmt_range(v.window_start_ms, v.window_end_ms);
        w!(o, "<tr><td class=\"when\">{}</td>", window.trim_end_matches(" UTC"));
        w!(o, "<td>{}</td><td>{}</td>", opt(&v.slice, "whole table"), opt(&v.column, "—"));
        w!(o, "<td><code>{}</code></td><td>{}</td></tr>\n", esc(&v.check), esc(&v.description));
    }
    o.push_str("</tbody>\n</table>\n");
    if rows.len() > MAX_VIOLATIONS {
        let (all, left_out) = (fmt_count(rows.len() as u64), fmt_count((rows.len() - MAX_VIOLATIONS) as u64));
        w!(o, "<p class=\"note\">Showing the newest {MAX_VIOLATIONS} of {all} violations; {left_out} older ones are left out.</p>\n");
    }
    o.push_str("</section>\n");
}

// ---- SVG building blocks ----

/// A coordinate for SVG: one decimal, and never `NaN`/`inf` whatever the input was.
struct P(f64);

impl fmt::Display for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.0.is_finite() { self.0.clamp(-1e6, 1e6) } else { 0.0 };
        write!(f, "{:.1}", v)
    }
}

/// A chart's viewBox is `W` × `h`; the plot area sits inside the margins, under the legend.
struct Frame {
    h: f64,
    left: f64,
    bottom: f64,
}

impl Frame {
    fn x0(&self) -> f64 { self.left }
    fn x1(&self) -> f64 { W - 12.0 }
    fn top(&self) -> f64 { 28.0 }
    fn base(&self) -> f64 { self.h - self.bottom }
}

/// Linear map from data `d0..d1` to pixels `r0..r1`; a zero-width domain maps to the middle.
struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        let t = if self.d1 > self.d0 { (v - self.d0) / (self.d1 - self.d0) } else { 0.5 };
        let p = self.r0 + t * (self.r1 - self.r0);
        if p.is_finite() { p } else { self.r0 }
    }
}

enum Key {
    Fill(&'static str),
    Outline(&'static str),
    Line(&'static str),
    Dash(&'static str),
    Dot(&'static str),
}

fn svg_open(o: &mut String, fr: &Frame, label: &str) {
    w!(o, "<svg class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{}\">\n", fr.h, esc(label));
}

fn legend(o: &mut String, keys: &[(Key, String)]) {
    let mut left = 40.0;
    for (key, label) in keys {
        let (x, end, mid) = (P(left), P(left + 12.0), P(left + 5.0));
        let rect = format!("<rect x=\"{x}\" y=\"6\" width=\"10\" height=\"10\" rx=\"2\"");
        let line = format!("<line x1=\"{x}\" x2=\"{end}\" y1=\"11\" y2=\"11\"");
        match key {
            Key::Fill(c) => w!(o, "{rect} fill=\"{c}\"/>"),
            Key::Outline(c) => w!(o, "{rect} fill=\"#fff\" stroke=\"{c}\" stroke-width=\"1.6\"/>"),
            Key::Line(c) => w!(o, "{line} stroke=\"{c}\" stroke-width=\"2\"/>"),
            Key::Dash(c) => w!(o, "{line} stroke=\"{c}\" stroke-width=\"1.2\" stroke-dasharray=\"4 2\"/>"),
            Key::Dot(c) => w!(o, "<circle cx=\"{mid}\" cy=\"11\" r=\"3.5\" fill=\"{c}\"/>"),
        }
        w!(o, "<text class=\"lg\" x=\"{}\" y=\"15\">{}</text>", P(left + 16.0), esc(label));
        left += 30.0 + 5.2 * label.chars().count() as f64;
    }
    o.push('\n');
}

/// Horizontal grid lines with round labels; returns the scale the plot uses.
fn y_axis(o: &mut String, fr: &Frame, lo: f64, hi: f64, suffix: &str) -> Scale {
    let (d0, d1, step) = nice_scale(lo, hi, 4);
    let s = Scale { d0, d1, r0: fr.base(), r1: fr.top() };
    for t in ticks(d0, d1, step) {
        let y = s.at(t);
        w!(o, "<line class=\"grid-line\" x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\"/>", P(fr.x0()), P(fr.x1()), P(y), P(y));
        w!(o, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}{suffix}</text>", P(fr.x0() - 5.0), P(y + 3.0), fmt_tick(t, step, d0.abs().max(d1.abs())));
    }
    o.push('\n');
    s
}

fn x_base(o: &mut String, fr: &Frame) {
    w!(o, "<line class=\"axis\" x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\"/>", P(fr.x0()), P(fr.x1()), P(fr.base()), P(fr.base()));
}

/// A tick mark and its label, with an optional second line (the date under a time of day).
fn x_tick(o: &mut String, fr: &Frame, x: f64, label: &str, second: Option<&str>) {
    let (x, y) = (P(x), fr.base());
    w!(o, "<line class=\"axis\" x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\"/>", P(y), P(y + 4.0));
    w!(o, "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}", P(y + 14.0), esc(label));
    if let Some(s) = second {
        w!(o, "<tspan x=\"{x}\" dy=\"11\">{}</tspan>", esc(s));
    }
    o.push_str("</text>");
}

/// Round UTC steps (1 min … 1 year); the date (or year) is shown under the first tick and
/// wherever it changes, which keeps each label short.
fn time_axis(o: &mut String, fr: &Frame, xs: &Scale, t0: i64, t1: i64) {
    const STEPS: [i64; 17] = [
        MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR,
        DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 61 * DAY, 91 * DAY, 365 * DAY,
    ];
    let span = t1.saturating_sub(t0).max(1);
    let step = STEPS.iter().copied().find(|s| span / s <= 5).unwrap_or_else(|| (span / 5 / (365 * DAY) + 1).saturating_mul(365 * DAY));
    let (fmt, second_fmt) = if step < DAY { ("%H:%M", "%b %d") } else { ("%b %d", "%Y") };
    x_base(o, fr);
    let mut t = t0.div_euclid(step).saturating_add(1).saturating_mul(step);
    if t0.rem_euclid(step) == 0 {
        t = t0;
    }
    let mut last_second = String::new();
    while t <= t1 {
        let second = fmt_ms(t, second_fmt);
        let show = (second != last_second).then_some(second.as_str());
        x_tick(o, fr, xs.at(t as f64), &fmt_ms(t, fmt), show);
        last_second = second;
        t = match t.checked_add(step) {
            Some(n) => n,
            None => break,
        };
    }
    o.push('\n');
}

/// An invisible band over a bin or category, so hovering anywhere over it shows its values.
fn hit(o: &mut String, x: f64, y: f64, w: f64, h: f64, title: &str) {
    w!(o, "<rect class=\"hit\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>", P(x), P(y), P(w), P(h), esc(title));
}

fn no_data(o: &mut String, fr: &Frame) {
    x_base(o, fr);
    w!(o, "<text class=\"nodata\" x=\"{}\" y=\"{}\">no data</text>\n</svg>\n", P((fr.x0() + fr.x1()) / 2.0), P((fr.top() + fr.base()) / 2.0));
}

// ---- numbers, times and text ----

/// Round bounds and a 1-2-5 step covering `lo..=hi` in about `n` steps. A zero or invalid span
/// is widened, so every value maps to a finite pixel.
fn nice_scale(lo: f64, hi: f64, n: usize) -> (f64, f64, f64) {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() && lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    if hi == lo {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo, hi) = (lo - pad, hi + pad);
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = mag * [1.0, 2.0, 5.0, 10.0].into_iter().find(|&m| raw / mag <= m).unwrap_or(10.0);
    let (a, b) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    if a.is_finite() && b.is_finite() && step.is_finite() && step > 0.0 && b > a {
        (a, b, step)
    } else {
        (0.0, 1.0, 0.2)
    }
}

/// Multiples of `step` inside `lo..=hi`: at most 20 and no repeats, whatever the rounding.
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil();
    let mut out: Vec<f64> = (0..20).map(|i| (first + i as f64) * step).take_while(|&t| t <= hi + step * 1e-9).collect();
    out.dedup();
    out
}

/// A tick label with just the decimals its step needs; k/M/G when the axis (up to `top`) goes
/// past ten thousand, the same unit for every label of the axis.
fn fmt_tick(v: f64, step: f64, top: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let mag = top.max(step);
    if mag >= 1e13 || step < 1e-6 {
        return format!("{v:.1e}");
    }
    let (_, scale, unit) = [(1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")].into_iter().find(|&(from, _, _)| mag >= from).unwrap_or((0.0, 1.0, ""));
    let decimals = (-(step / scale).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{:.*}{unit}", decimals, v / scale)
}

/// A measured value, with four significant digits.
fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e7).contains(&a) {
        format!("{v:.3e}")
    } else {
        let decimals = (3.0 - a.log10().floor()).max(0.0) as usize;
        let s = format!("{:.*}", decimals, v);
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
    }
}

fn fmt_pct(share: f64) -> String {
    format!("{:.1}%", if share.is_finite() { share * 100.0 } else { 0.0 })
}

/// `1234567` → `1,234,567`.
fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A UTC time; out-of-range values (not a real time) show as the raw number.
fn fmt_ms(ms: i64, fmt: &str) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.format(fmt).to_string())
}

fn fmt_time(ms: i64) -> String {
    format!("{} UTC", fmt_ms(ms, "%Y-%m-%d %H:%M"))
}

/// `since → until`, leaving out the end's date when it is the same day.
fn fmt_range(since: i64, until: i64) -> String {
    let same_day = fmt_ms(since, "%Y-%m-%d") == fmt_ms(until, "%Y-%m-%d");
    let end = if same_day { fmt_ms(until, "%H:%M") } else { fmt_ms(until, "%Y-%m-%d %H:%M") };
    format!("{} → {end} UTC", fmt_ms(since, "%Y-%m-%d %H:%M"))
}

fn truncate(s: &str, max: usize) -> String {
    let max = max.max(2);
    if s.chars().count() <= max { s.to_string() } else { s.chars().take(max - 1).chain(['…']).collect() }
}

/// Text for HTML content and attribute values alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_763_683_200_000; // 2025-11-21 00:00 UTC

    fn empty() -> ReportData {
        ReportData {
            endpoint: "iris".into(),
            generated_at_ms: T0,
            current_since_ms: T0,
            current_until_ms: T0 + DAY,
            reference_rows: 150,
            current_rows: 0,
            features: vec![],
            drift_series: vec![],
            quality_series: vec![],
            violations: vec![],
        }
    }

    fn numeric(name: &str, edges: Vec<f64>, reference: Vec<f64>, current: Vec<f64>) -> FeatureReport {
        FeatureReport { name: name.into(), role: "input".into(), distribution: Distribution::Numeric { edges, reference, current }, drift: None }
    }

    fn categorical(name: &str, categories: Vec<String>, reference: Vec<f64>, current: Vec<f64>) -> FeatureReport {
        let distribution = Distribution::Categorical { categories, reference, current };
        FeatureReport { name: name.into(), role: "prediction".into(), distribution, drift: None }
    }

    fn series(title: &str, points: Vec<(i64, f64)>, threshold: Option<f64>) -> Series {
        Series { title: title.into(), points, threshold, higher_is_bad: true }
    }

    fn violation(i: i64) -> ViolationRow {
        ViolationRow {
            window_start_ms: T0 + i * HOUR,
            window_end_ms: T0 + (i + 1) * HOUR,
            slice: None,
            column: Some("x".into()),
            check: "baseline_drift_check".into(),
            description: format!("window {i}"),
        }
    }

    #[test]
    fn escapes_every_text() {
        let evil = "<script>alert(1)</script>";
        let mut d = empty();
        d.endpoint = format!("ep{evil}");
        d.features.push(numeric(evil, vec![0.0, 1.0], vec![1.0], vec![1.0]));
        d.features.push(categorical("c", vec![evil.into(), "a'b\"c&d".into()], vec![0.5, 0.5], vec![0.2, 0.8]));
        d.features[1].role = evil.into();
        d.drift_series.push(series(evil, vec![(T0, 0.1)], Some(0.2)));
        d.violations.push(ViolationRow { slice: Some(evil.into()), description: evil.into(), ..violation(0) });
        let html = render(&d);
        assert!(!html.contains("<script"), "unescaped script tag");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&#39;b&quot;c&amp;d"));
    }

    #[test]
    fn degenerate_inputs_never_give_nan_or_inf() {
        let mut d = empty();
        d.current_since_ms = i64::MAX;
        d.current_until_ms = i64::MIN;
        d.features = vec![
            numeric("none", vec![], vec![], vec![]),
            numeric("bad_edges", vec![f64::NAN, f64::INFINITY], vec![f64::NAN], vec![f64::INFINITY]),
            numeric("mismatched", vec![0.0, 1.0], vec![0.5, 0.5, 0.5], vec![]),
            numeric("constant", vec![2.5, 3.5], vec![1.0], vec![1.0]),
            numeric("zero", vec![0.0, 1.0, 2.0], vec![0.0, 0.0], vec![0.0, 0.0]),
            numeric("huge", vec![-1e308, 0.0, 1e308], vec![1e308, 0.5], vec![0.5, -1.0]),
            categorical("cats", vec!["a".into(), "b".into()], vec![f64::NAN], vec![]),
            categorical("no_categories", vec![], vec![0.5], vec![0.5]),
        ];
        d.features[0].drift = Some(DriftSummary { metric: "psi".into(), value: f64::NAN, threshold: f64::INFINITY, drifted: true });
        d.drift_series = vec![
            series("empty", vec![], Some(0.1)),
            series("one", vec![(T0, 0.3)], Some(0.1)),
            series("flat", vec![(T0, 1.0), (T0 + HOUR, 1.0)], None),
            series("zeros", vec![(T0, 0.0), (T0 + HOUR, 0.0)], Some(0.0)),
            series("nonfinite", vec![(T0, f64::NAN), (T0 + HOUR, f64::INFINITY), (T0 + 2 * HOUR, f64::NEG_INFINITY)], Some(f64::NAN)),
            series("extreme", vec![(T0, -1e308), (T0 + HOUR, 1e308), (T0 + 2 * HOUR, 1e-300)], Some(1e308)),
        ];
        d.quality_series = vec![series("far", vec![(i64::MIN, 1.0), (i64::MAX, 2.0)], None)];
        let html = render(&d);
        assert!(!html.contains("NaN"));
        for svg in html.split("<svg").skip(1) {
            let svg = &svg[..svg.find("</svg>").expect("closed svg")];
            assert!(!svg.contains("inf"), "inf in {svg}");
        }
        assert_eq!(html.matches("class=\"chart\"").count(), d.features.len() + 7);
    }

    #[test]
    fn one_chart_per_feature_and_series() {
        let mut d = empty();
        d.features = (0..3).map(|i| numeric(&format!("f{i}"), vec![0.0, 1.0, 2.0], vec![0.4, 0.6], vec![0.5, 0.5])).collect();
        d.features.push(categorical("many", (0..30).map(|i| format!("c{i}")).collect(), vec![1.0 / 30.0; 30], vec![1.0 / 30.0; 30]));
        d.drift_series = (0..3).map(|i| series(&format!("f{i}"), vec![(T0, 0.1), (T0 + HOUR, 0.3)], Some(0.2))).collect();
        d.quality_series = vec![series("accuracy", vec![(T0, 0.9)], None), series("row_count", vec![], None)];
        let html = render(&d);
        assert_eq!(html.matches("class=\"chart\"").count(), 4 + 5);
        assert!(html.contains("10 more categories (other) not shown"));
        assert_eq!(html, render(&d), "deterministic");
    }

    #[test]
    fn empty_data_explains_itself() {
        let html = render(&empty());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Inferlog report — iris</title>"));
        assert!(html.contains("No feature distributions yet"));
        assert_eq!(html.matches("No monitoring runs yet: run <code>inferlog monitor iris</code>").count(), 3);
        assert!(!html.contains("<svg"));
        assert!(!html.contains("http") && !html.contains("<script"), "no external resources or scripts");
    }

    #[test]
    fn violations_are_capped_newest_first() {
        let mut d = empty();
        d.violations = (0..600).map(violation).collect();
        let html = render(&d);
        assert_eq!(html.matches("<tr><td").count(), MAX_VIOLATIONS);
        assert!(html.contains("Showing the newest 500 of 600 violations; 100 older ones are left out."));
        assert!(html.find("window 599").unwrap() < html.find("window 598").unwrap());
        assert!(!html.contains("window 99<"));
    }

    #[test]
    fn numbers_are_round_and_compact() {
        assert_eq!(nice_scale(0.0, 0.37, 4), (0.0, 0.4, 0.1));
        assert_eq!(ticks(0.0, 1.0, 0.25).len(), 5);
        assert_eq!(fmt_tick(1_500_000.0, 500_000.0, 2e6), "1.5M");
        assert_eq!(fmt_tick(0.30000000000000004, 0.1, 1.0), "0.3");
        assert_eq!(fmt_value(0.123456), "0.1235");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_range(T0, T0 + HOUR), "2025-11-21 00:00 → 01:00 UTC");
    }
}
