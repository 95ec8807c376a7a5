//! A small iris classifier that speaks the MLflow scoring protocol, used by the demo, the
//! tests and the benchmark. It classifies by the nearest class centroid of Fisher's iris data.
//!
//! `POST /invocations` with `dataframe_split`, `dataframe_records`, `instances` or `inputs`
//! (JSON), or `text/csv`, answers `{"predictions": [class, ...]}`. Bad input answers 400 with
//! MLflow's error shape, a negative measurement makes the model fail with 500; `GET /ping`
//! and `/health` answer 200.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

pub const FEATURES: [&str; 4] = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"];
const CENTROIDS: [[f64; 4]; 3] = [
    [5.006, 3.428, 1.462, 0.246],
    [5.936, 2.770, 4.260, 1.326],
    [6.588, 2.974, 5.552, 2.026],
];

pub fn app() -> Router {
    Router::new()
        .route("/invocations", post(invocations))
        .route("/ping", get(|| async { "" }))
        .route("/health", get(|| async { "" }))
}

pub async fn serve(listener: tokio::net::TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    axum::serve(listener, app()).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error_code": "BAD_REQUEST", "message": message.into()})),
    )
        .into_response()
}

async fn invocations(headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let rows = if content_type.starts_with("text/csv") {
        parse_csv(&body)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => parse_json(&v),
            Err(e) => Err(format!("Failed to parse input as JSON: {e}")),
        }
    };
    match rows {
        // Like a real model that was never trained on impossible measurements, it fails on them.
        Ok(rows) if rows.iter().flatten().any(|v| *v < 0.0) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error_code": "INTERNAL_ERROR", "message": "model raised ValueError: negative measurement"})),
        )
            .into_response(),
        Ok(rows) => axum::Json(json!({"predictions": rows.iter().map(classify).collect::<Vec<_>>()})).into_response(),
        Err(message) => bad_request(message),
    }
}

/// A training set for the demo's baseline: 50 measurements around each class centre, with the
/// true class (`species`) and the model's answer (`predicted`).
pub fn training_csv() -> String {
    let mut csv = format!("{},species,predicted\n", FEATURES.join(","));
    for (class, centre) in CENTROIDS.iter().enumerate() {
        for j in 0..50 {
            // A fixed spread of ±0.25 around the centre, different per feature.
            let row: [f64; 4] = std::array::from_fn(|f| centre[f] + (((j * (3 + 2 * f) + f) % 11) as f64 - 5.0) * 0.05);
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
            csv.push_str(&format!("{},{class},{}\n", cells.join(","), classify(&row)));
        }
    }
    csv
}

pub fn classify(x: &[f64; 4]) -> usize {
    let dist = |c: &[f64; 4]| c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
    (0..3)
        .min_by(|a, b| dist(&CENTROIDS[*a]).total_cmp(&dist(&CENTROIDS[*b])))
        .expect("three classes")
}

fn number(v: &Value) -> Result<f64, String> {
    v.as_f64().ok_or_else(|| format!("feature value {v} is not a number"))
}

fn row_from_array(v: &Value) -> Result<[f64; 4], String> {
    let arr = v.as_array().ok_or_else(|| format!("row {v} is not an array"))?;
    if arr.len() != 4 {
        return Err(format!("expected 4 features per row, got {}", arr.len()));
    }
    Ok([number(&arr[0])?, number(&arr[1])?, number(&arr[2])?, number(&arr[3])?])
}

fn row_from_object(v: &Value) -> Result<[f64; 4], String> {
    let obj = v.as_object().ok_or_else(|| format!("record {v} is not an object"))?;
    let mut out = [0.0; 4];
    for (i, name) in FEATURES.iter().enumerate() {
        let value = obj.get(*name).ok_or_else(|| format!("missing feature `{name}`"))?;
        out[i] = number(value)?;
    }
    Ok(out)
}

fn rows_from_list(list: &Value) -> Result<Vec<[f64; 4]>, String> {
    let list = list.as_array().ok_or("expected a list of rows")?;
    list.iter()
        .map(|r| if r.is_object() { row_from_object(r) } else { row_from_array(r) })
        .collect()
}

pub fn parse_json(v: &Value) -> Result<Vec<[f64; 4]>, String> {
    let obj = v.as_object().ok_or("The input must be a JSON object")?;
    let keys: Vec<&str> = ["dataframe_split", "dataframe_records", "instances", "inputs"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let [key] = keys.as_slice() else {
        return Err("The input must contain exactly one of dataframe_split, dataframe_records, instances, inputs".into());
    };
    let rows = match *key {
        "dataframe_split" => {
            let split = &obj[*key];
            let columns: Vec<&str> = split["columns"]
                .as_array()
                .ok_or("dataframe_split needs `columns`")?
                .iter()
                .map(|c| c.as_str().unwrap_or(""))
                .collect();
            let data = split["data"].as_array().ok_or("dataframe_split needs `data`")?;
            data.iter()
                .map(|row| {
                    let values = row.as_array().ok_or("each data row must be an array")?;
                    let record: serde_json::Map<String, Value> =
                        columns.iter().map(|c| c.to_string()).zip(values.iter().cloned()).collect();
                    row_from_object(&Value::Object(record))
                })
                .collect::<Result<Vec<_>, String>>()?
        }
        other => rows_from_list(&obj[other])?,
    };
    if rows.is_empty() {
        return Err("no rows to score".into());
    }
    Ok(rows)
}

fn parse_csv(body: &[u8]) -> Result<Vec<[f64; 4]>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "CSV input is not UTF-8".to_string())?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.iter().any(|c| c.parse::<f64>().is_err()) && rows.is_empty() {
            continue; // header
        }
        let values = cells
            .iter()
            .map(|c| c.parse::<f64>().map_err(|_| format!("`{c}` is not a number")))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(row_from_array(&json!(values))?);
    }
    if rows.is_empty() {
        return Err("no rows to score".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_mlflow_input_shapes_score_the_same() {
        let rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]];
        let split = json!({"dataframe_split": {"columns": FEATURES, "data": rows}});
        let records = json!({"dataframe_records": rows.iter().map(|r| {
            FEATURES.iter().zip(r).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>()});
        let instances = json!({"instances": rows});
        let inputs = json!({"inputs": rows, "client_request_id": "x"});
        for body in [split, records, instances, inputs] {
            let parsed = parse_json(&body).unwrap();
            assert_eq!(parsed.iter().map(classify).collect::<Vec<_>>(), vec![0, 2], "{body}");
        }
        assert!(parse_json(&json!({"instances": [[1, 2]]})).unwrap_err().contains("4 features"));
        assert!(parse_json(&json!({"rows": []})).is_err());
        assert_eq!(parse_csv(b"a,b,c,d\n5.9,3.0,4.2,1.5\n").unwrap().len(), 1);
    }
}
