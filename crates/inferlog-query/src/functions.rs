//! The table functions of Inferlog SQL:
//!
//! - `inference_table('iris' [, model_version => '3'] [, since => T] [, until => T])`: the
//!   endpoint's payload table, filtered. `since` is inclusive, `until` exclusive; both also
//!   bound the `date` partition column, so a narrow range reads only its days' files.
//! - `labeled('iris')`: unpacked rows joined with their ground-truth labels.
//!
//! They are planned as relations (DataFusion's [`RelationPlanner`]) rather than as plain
//! table functions because DataFusion's table functions take positional arguments only, and
//! because planning them inside the statement lets them read the tables registered in the
//! session (so `--as-of` applies to them too).

use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::datafusion::common::{plan_datafusion_err, plan_err, DFSchema, Result, ScalarValue, TableReference};
use deltalake::datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use deltalake::datafusion::logical_expr::simplify::SimplifyContext;
use deltalake::datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use deltalake::datafusion::optimizer::simplify_expressions::ExprSimplifier;
use deltalake::datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, TableFactor};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;

const MS_PER_DAY: i64 = 86_400_000;

/// Plans `inference_table(...)` and `labeled(...)`; any other relation is left to DataFusion.
#[derive(Debug, Default)]
pub struct InferlogFunctions;

impl RelationPlanner for InferlogFunctions {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let function = match &relation {
            TableFactor::Table { name, args: Some(_), .. } => match name.0.as_slice() {
                [part] => part.as_ident().map(|ident| ident.value.to_lowercase()),
                _ => None,
            },
            _ => None,
        };
        let (Some(function), TableFactor::Table { alias, args: Some(args), .. }) = (function, &relation) else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let plan = match function.as_str() {
            "inference_table" => {
                let args = bind_args(&function, &args.args, &INFERENCE_TABLE_PARAMS, context)?;
                plan_inference_table(args, context)?
            }
            "labeled" => {
                let args = bind_args(&function, &args.args, &LABELED_PARAMS, context)?;
                plan_labeled(args, context)?
            }
            _ => return Ok(RelationPlanning::Original(Box::new(relation))),
        };
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, alias.clone()))))
    }
}

/// A parameter of a table function and the type its argument is read as.
struct Param {
    name: &'static str,
    kind: ParamKind,
    required: bool,
}

#[derive(Clone, Copy)]
enum ParamKind {
    Text,
    /// Read as a UTC timestamp: `'2026-11-20'`, `'2026-11-20T10:00:00Z'`,
    /// `TIMESTAMP '…'`, `now() - INTERVAL '1 hour'`.
    Timestamp,
}

const INFERENCE_TABLE_PARAMS: [Param; 4] = [
    Param { name: "endpoint", kind: ParamKind::Text, required: true },
    Param { name: "model_version", kind: ParamKind::Text, required: false },
    Param { name: "since", kind: ParamKind::Timestamp, required: false },
    Param { name: "until", kind: ParamKind::Timestamp, required: false },
];

const LABELED_PARAMS: [Param; 1] = [Param { name: "endpoint", kind: ParamKind::Text, required: true }];

/// Arguments bound to parameters, in parameter order; `None` = not given (or NULL).
struct BoundArgs(Vec<Option<ScalarValue>>);

impl BoundArgs {
    fn text(&self, index: usize) -> Option<String> {
        match &self.0[index] {
            Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => {
                Some(s.clone())
            }
            _ => None,
        }
    }

    fn timestamp_ms(&self, index: usize) -> Option<i64> {
        match &self.0[index] {
            Some(ScalarValue::TimestampMillisecond(Some(ms), _)) => Some(*ms),
            _ => None,
        }
    }
}

/// Binds positional and `name => value` arguments to `params`, folding each argument to a
/// constant of the parameter's type.
fn bind_args(
    function: &str,
    args: &[FunctionArg],
    params: &[Param],
    context: &mut dyn RelationPlannerContext,
) -> Result<BoundArgs> {
    let mut bound: Vec<Option<ScalarValue>> = vec![None; params.len()];
    let mut seen = vec![false; params.len()];
    let mut named_seen = false;
    for (position, arg) in args.iter().enumerate() {
        let (index, expr) = match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => {
                if named_seen {
                    return plan_err!("{function}: positional arguments must come before named ones");
                }
                if position >= params.len() {
                    return plan_err!("{function}: takes at most {} arguments", params.len());
                }
                (position, expr)
            }
            FunctionArg::Named { name, arg: FunctionArgExpr::Expr(expr), .. } => {
                named_seen = true;
                let wanted = name.value.to_lowercase();
                let Some(index) = params.iter().position(|p| p.name == wanted) else {
                    let known: Vec<_> = params.iter().map(|p| p.name).collect();
                    return plan_err!("{function}: unknown argument `{wanted}` (known: {})", known.join(", "));
                };
                (index, expr)
            }
            other => return plan_err!("{function}: unsupported argument `{other}`"),
        };
        let param = &params[index];
        if seen[index] {
            return plan_err!("{function}: argument `{}` given twice", param.name);
        }
        seen[index] = true;
        let logical = context.sql_expr_to_logical_expr(expr.clone(), &DFSchema::empty())?;
        bound[index] = constant(function, param, logical)?;
    }
    for (param, value) in params.iter().zip(&bound) {
        if param.required && value.is_none() {
            return plan_err!("{function}: argument `{}` is required", param.name);
        }
    }
    Ok(BoundArgs(bound))
}

fn constant(function: &str, param: &Param, expr: Expr) -> Result<Option<ScalarValue>> {
    let target = match param.kind {
        ParamKind::Text => DataType::Utf8,
        ParamKind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    };
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    let folded = simplifier
        .simplify(cast(expr, target))
        .map_err(|e| plan_datafusion_err!("{function}: `{}` is not a valid value: {e}", param.name))?;
    match folded {
        Expr::Literal(value, _) if value.is_null() => Ok(None),
        Expr::Literal(value, _) => Ok(Some(value)),
        other => plan_err!("{function}: `{}` must be a constant, not `{other}`", param.name),
    }
}

fn table_scan(context: &mut dyn RelationPlannerContext, table: &str, missing: impl FnOnce() -> String) -> Result<LogicalPlanBuilder> {
    let reference = TableReference::bare(table);
    let source = context
        .context_provider()
        .get_table_source(reference.clone())
        .map_err(|_| plan_datafusion_err!("{}", missing()))?;
    LogicalPlanBuilder::scan(reference, source, None)
}

fn plan_inference_table(args: BoundArgs, context: &mut dyn RelationPlannerContext) -> Result<LogicalPlan> {
    let endpoint = args.text(0).unwrap_or_default();
    let table = format!("{endpoint}_payload");
    let mut plan = table_scan(context, &table, || {
        format!("inference_table: no endpoint `{endpoint}` (no table {table} in this data directory)")
    })?;
    let mut filters = Vec::new();
    if let Some(version) = args.text(1) {
        filters.push(col("model_version").eq(lit(version)));
    }
    if let Some(since) = args.timestamp_ms(2) {
        filters.push(col("date").gt_eq(lit(ScalarValue::Date32(Some(day_of(since))))));
        filters.push(col("timestamp_ms").gt_eq(lit(since)));
    }
    if let Some(until) = args.timestamp_ms(3) {
        // `until` is exclusive: the last day that can hold a row is the day of until - 1 ms.
        filters.push(col("date").lt_eq(lit(ScalarValue::Date32(Some(day_of(until - 1))))));
        filters.push(col("timestamp_ms").lt(lit(until)));
    }
    for filter in filters {
        plan = plan.filter(filter)?;
    }
    plan.build()
}

fn day_of(ms: i64) -> i32 {
    ms.div_euclid(MS_PER_DAY) as i32
}

/// `labeled('iris')`: every unpacked row that has a label, with `label` and
/// `label_arrived_at`. A label keyed by request id (and row index) wins over one keyed by
/// client request id for the same row.
fn plan_labeled(args: BoundArgs, context: &mut dyn RelationPlannerContext) -> Result<LogicalPlan> {
    let endpoint = args.text(0).unwrap_or_default();
    let unpacked = format!("{endpoint}_unpacked");
    let labels = format!("{endpoint}_labels");
    for (table, hint) in [
        (&unpacked, format!("run `inferlog unpack {endpoint}` (or set unpack = true on the endpoint)")),
        (&labels, format!("import some with `inferlog labels import {endpoint} FILE ...` or POST /api/endpoints/{endpoint}/labels")),
    ] {
        if context.context_provider().get_table_source(TableReference::bare(table.as_str())).is_err() {
            return plan_err!("labeled: no table {table} yet; {hint}");
        }
    }
    let sql = format!(
        "(SELECT u.*, COALESCE(r.label, c.label) AS label, \
                 COALESCE(r.arrived_at, c.arrived_at) AS label_arrived_at \
          FROM {u} u \
          LEFT JOIN (SELECT key, row_index, label, arrived_at FROM {l} WHERE key_kind = 'request_id') r \
            ON r.key = u.request_id AND r.row_index = u.row_index \
          LEFT JOIN (SELECT key, row_index, label, arrived_at FROM {l} WHERE key_kind = 'client_request_id') c \
            ON c.key = u.client_request_id AND c.row_index = u.row_index \
          WHERE r.key IS NOT NULL OR c.key IS NOT NULL)",
        u = quote_ident(&unpacked),
        l = quote_ident(&labels),
    );
    let factor = Parser::new(&GenericDialect {})
        .try_with_sql(&sql)
        .and_then(|mut parser| parser.parse_table_factor())
        .map_err(|e| plan_datafusion_err!("labeled: {e}"))?;
    context.plan(factor)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
