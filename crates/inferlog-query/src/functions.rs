//! The table functions of Inferlog SQL:
//!
//! - `inference_table('iris' [, model_version => '3'] [, since => T] [, until => T]
//!   [, gateway => 'gw-a'])`: the endpoint's payload table, filtered. `since` is inclusive, `until` exclusive; both also
//!   bound the `date` partition column, so a narrow range reads only its days' files.
//! - `labeled('iris')`: unpacked rows joined with their ground-truth labels.
//!
//! They are planned as relations (DataFusion's [`RelationPlanner`]) rather than as plain
//! table functions because DataFusion's table functions take positional arguments only, and
//! because planning them inside the statement lets them read the tables registered in the
//! session (so `--as-of` applies to them too).

use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::{plan_datafusion_err, plan_err, Column, DFSchema, JoinType, Result, ScalarValue};
use deltalake::datafusion::datasource::provider_as_source;
use deltalake::datafusion::functions::core::expr_fn::coalesce;
use deltalake::datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use deltalake::datafusion::logical_expr::simplify::SimplifyContext;
use deltalake::datafusion::logical_expr::{cast, col, lit, Expr, LogicalPlan, LogicalPlanBuilder};
use deltalake::datafusion::optimizer::simplify_expressions::ExprSimplifier;
use deltalake::datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, TableFactor};
use std::collections::HashMap;
use std::sync::Arc;

/// Plans `inference_table(...)` and `labeled(...)`; any other relation is left to DataFusion.
///
/// It holds the session's tables itself: DataFusion's planner only resolves the tables a
/// statement names, and a table function's tables are not named in the statement.
#[derive(Debug, Default)]
pub struct InferlogFunctions {
    tables: HashMap<String, Arc<dyn TableProvider>>,
}

impl InferlogFunctions {
    pub fn new(tables: HashMap<String, Arc<dyn TableProvider>>) -> Self {
        InferlogFunctions { tables }
    }

    fn scan(&self, table: &str, alias: &str) -> Option<Result<LogicalPlanBuilder>> {
        let provider = self.tables.get(table)?;
        Some(LogicalPlanBuilder::scan(alias, provider_as_source(provider.clone()), None))
    }
}

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
                self.plan_inference_table(args)?
            }
            "labeled" => {
                let args = bind_args(&function, &args.args, &LABELED_PARAMS, context)?;
                self.plan_labeled(args)?
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

const INFERENCE_TABLE_PARAMS: [Param; 5] = [
    Param { name: "endpoint", kind: ParamKind::Text, required: true },
    Param { name: "model_version", kind: ParamKind::Text, required: false },
    Param { name: "since", kind: ParamKind::Timestamp, required: false },
    Param { name: "until", kind: ParamKind::Timestamp, required: false },
    Param { name: "gateway", kind: ParamKind::Text, required: false },
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

impl InferlogFunctions {
    fn plan_inference_table(&self, args: BoundArgs) -> Result<LogicalPlan> {
        let endpoint = args.text(0).unwrap_or_default();
        let table = format!("{endpoint}_payload");
        let Some(plan) = self.scan(&table, &table) else {
            return plan_err!("inference_table: no endpoint `{endpoint}` (no table {table} in this data directory)");
        };
        let mut plan = plan?;
        let mut filters = Vec::new();
        if let Some(version) = args.text(1) {
            filters.push(col("model_version").eq(lit(version)));
        }
        if let Some(since) = args.timestamp_ms(2) {
            filters.push(col("date").gt_eq(lit(ScalarValue::Date32(Some(inferlog_core::record::date_days(since))))));
            filters.push(col("timestamp_ms").gt_eq(lit(since)));
        }
        if let Some(until) = args.timestamp_ms(3) {
            // `until` is exclusive: the last day that can hold a row is the day of until - 1 ms.
            filters.push(col("date").lt_eq(lit(ScalarValue::Date32(Some(inferlog_core::record::date_days(until.saturating_sub(1)))))));
            filters.push(col("timestamp_ms").lt(lit(until)));
        }
        if let Some(gateway) = args.text(4) {
            // A table no gateway has written since the column was added has no such rows.
            filters.push(if plan.schema().has_column_with_unqualified_name("gateway_id") {
                col("gateway_id").eq(lit(gateway))
            } else {
                lit(false)
            });
        }
        for filter in filters {
            plan = plan.filter(filter)?;
        }
        plan.build()
    }

    /// `labeled('iris')`: every unpacked row that has a label, with `label` and
    /// `label_arrived_at`. A label keyed by request id (and row index) wins over one keyed
    /// by client request id for the same row.
    fn plan_labeled(&self, args: BoundArgs) -> Result<LogicalPlan> {
        let endpoint = args.text(0).unwrap_or_default();
        let unpacked = format!("{endpoint}_unpacked");
        let labels = format!("{endpoint}_labels");
        let Some(rows) = self.scan(&unpacked, "u") else {
            return plan_err!(
                "labeled: no table {unpacked} yet; run `inferlog unpack {endpoint}` (or set unpack = true on the endpoint)"
            );
        };
        let rows = rows?;
        let columns: Vec<Expr> = rows.schema().fields().iter().map(|f| col(Column::new(Some("u"), f.name()))).collect();
        let labels_of = |kind: &str, alias: &str| -> Result<LogicalPlan> {
            let Some(scan) = self.scan(&labels, alias) else {
                return plan_err!(
                    "labeled: no table {labels} yet; import labels with `inferlog labels import {endpoint} FILE ...` \
                     or POST /api/endpoints/{endpoint}/labels"
                );
            };
            scan?.filter(col(Column::new(Some(alias), "key_kind")).eq(lit(kind)))?.build()
        };
        let by_request = labels_of("request_id", "r")?;
        let by_client = labels_of("client_request_id", "c")?;
        let either = |name: &str| coalesce(vec![col(Column::new(Some("r"), name)), col(Column::new(Some("c"), name))]);
        let mut projection = columns;
        projection.push(either("label").alias("label"));
        projection.push(either("arrived_at").alias("label_arrived_at"));
        rows.join(by_request, JoinType::Left, (vec!["u.request_id", "u.row_index"], vec!["r.key", "r.row_index"]), None)?
            .join(
                by_client,
                JoinType::Left,
                (vec!["u.client_request_id", "u.row_index"], vec!["c.key", "c.row_index"]),
                None,
            )?
            .filter(col("r.key").is_not_null().or(col("c.key").is_not_null()))?
            .project(projection)?
            .build()
    }
}
