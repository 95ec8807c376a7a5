//! Another Delta reader — the Python `deltalake` package, and polars — reads the table.
//! `scripts/test` makes the virtualenv and passes its interpreter in `INTEROP_PYTHON`.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = r#"
import json, sys
import deltalake, polars as pl
path = sys.argv[1]
dt = deltalake.DeltaTable(path)
table = dt.to_pyarrow_table()
df = pl.read_delta(path)
print(json.dumps({
    "rows": table.num_rows,
    "polars_rows": df.height,
    "distinct": df["request_id"].n_unique(),
    "partitions": dt.metadata().partition_columns,
    "types": {f.name: str(f.type) for f in table.schema},
    "statuses": sorted(df["status_code"].unique().to_list()),
    "codes": df.filter(pl.col("status_code") == 200)["logging_error_codes"].to_list()[0],
    "metadata_ua": df.filter(pl.col("status_code") == 200)["request_metadata"].to_list()[0],
}))
"#;

#[test]
fn python_deltalake_and_polars_read_the_table() {
    let python = std::env::var("INTEROP_PYTHON")
        .expect("INTEROP_PYTHON is not set: run the tests with scripts/test, which installs deltalake and polars");
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), &endpoint_toml("iris", &up.url(), ""));
    let http = client();
    for i in 0..20 {
        http.post(gw.url("/endpoints/iris/echo")).header("user-agent", "interop").body(format!("{{\"i\": {i}}}")).send().unwrap();
    }
    http.get(gw.url("/endpoints/iris/status/503")).send().unwrap();
    assert_eq!(wait_rows(dir.path(), "iris_payload", 21, Duration::from_secs(30)), 21);
    let out = Command::new(python)
        .args(["-c", SCRIPT, dir.path().join("tables/iris_payload").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 21);
    assert_eq!(v["polars_rows"], 21);
    assert_eq!(v["distinct"], 21);
    assert_eq!(v["partitions"], serde_json::json!(["date"]));
    assert_eq!(v["statuses"], serde_json::json!([200, 503]));
    assert_eq!(v["codes"], serde_json::json!([]));
    assert_eq!(v["types"]["date"], "date32[day]");
    assert_eq!(v["types"]["timestamp_ms"], "int64");
    assert_eq!(v["types"]["status_code"], "int32");
    assert!(v["types"]["request_metadata"].as_str().unwrap().starts_with("map<"), "{v}");
    assert!(v["metadata_ua"].to_string().contains("interop"), "{v}");
}
