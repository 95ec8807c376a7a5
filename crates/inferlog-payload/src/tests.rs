//! End-to-end tests through the public API with realistic bodies.
//!
//! Object keys are looked up by name rather than by position where a JSON
//! object decides the column order, because that order follows serde_json's
//! map (sorted unless its `preserve_order` feature is enabled).

use std::collections::HashSet;

use super::*;
use proptest::prelude::*;
use Value::{Bool, Bytes, Float, Int, Json, Null, Str};

const JSON: Option<&str> = Some("application/json");
const CSV: Option<&str> = Some("text/csv");

fn request(body: &str) -> Instances {
    let parsed =
        parse_request(body.as_bytes(), JSON).unwrap_or_else(|e| panic!("{e}\nbody: {body}"));
    assert_invariants(&parsed, "");
    parsed
}

fn response(body: &str) -> Instances {
    let parsed =
        parse_response(body.as_bytes(), JSON).unwrap_or_else(|e| panic!("{e}\nbody: {body}"));
    assert_invariants(&parsed, "prediction");
    parsed
}

fn request_error(body: &str) -> String {
    match parse_request(body.as_bytes(), JSON) {
        Ok(parsed) => panic!("expected an error, got {parsed:?}"),
        Err(PayloadError(message)) => message,
    }
}

fn response_error(body: &str) -> String {
    match parse_response(body.as_bytes(), JSON) {
        Ok(parsed) => panic!("expected an error, got {parsed:?}"),
        Err(PayloadError(message)) => message,
    }
}

/// The cells of one column, looked up by name.
fn column(parsed: &Instances, name: &str) -> Vec<Value> {
    let index = parsed
        .columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", parsed.columns));
    parsed.rows.iter().map(|row| row[index].clone()).collect()
}

fn sorted_columns(parsed: &Instances) -> Vec<&str> {
    let mut columns: Vec<&str> = parsed.columns.iter().map(String::as_str).collect();
    columns.sort_unstable();
    columns
}

fn assert_invariants(parsed: &Instances, prefix: &str) {
    let unique: HashSet<&String> = parsed.columns.iter().collect();
    assert_eq!(
        unique.len(),
        parsed.columns.len(),
        "duplicate columns in {:?}",
        parsed.columns
    );
    for name in &parsed.columns {
        assert!(name.starts_with(prefix), "{name} lacks prefix {prefix}");
        assert_eq!(
            &sanitize_column_name(name),
            name,
            "column {name} is not sanitized"
        );
    }
    for row in &parsed.rows {
        assert_eq!(row.len(), parsed.columns.len());
    }
}

// ---------------------------------------------------------------- requests

#[test]
fn databricks_iris_dataframe_split() {
    let parsed = request(
        r#"{"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
            "data": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]}, "client_request_id": "abc-123"}"#,
    );
    assert_eq!(
        parsed.columns,
        [
            "sepal_length_cm",
            "sepal_width_cm",
            "petal_length_cm",
            "petal_width_cm"
        ]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Float(5.1), Float(3.5), Float(1.4), Float(0.2)],
            vec![Float(6.2), Float(2.9), Float(4.3), Float(1.3)],
        ]
    );
}

#[test]
fn positional_columns_take_the_configured_feature_names() {
    let names: Vec<String> = ["sepal length (cm)", "sepal width (cm)", "input_3"].map(String::from).to_vec();
    let mut parsed = request(r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#);
    assert!(parsed.positional);
    parsed.name_positional(&names);
    // Sanitized like any column name; one past the list keeps its position; a name that
    // meets a positional one is made unique.
    assert_eq!(parsed.columns, ["sepal_length_cm", "sepal_width_cm", "input_3", "input_3_2"]);
    assert_eq!(parsed.rows, [vec![Float(5.1), Float(3.5), Float(1.4), Float(0.2)]]);

    let mut named = request(r#"{"dataframe_records": [{"a": 1, "b": 2}]}"#);
    assert!(!named.positional);
    named.name_positional(&names);
    assert_eq!(named.columns, ["a", "b"], "a payload's own names stay");
}

#[test]
fn dataframe_split_with_index_and_without_columns() {
    let parsed = request(
        r#"{"dataframe_split": {"index": [7, 8], "data": [[1, "a", null], [2, "b", true]]}}"#,
    );
    assert_eq!(parsed.columns, ["input_0", "input_1", "input_2"]);
    assert_eq!(
        parsed.rows,
        [
            vec![Int(1), Str("a".into()), Null],
            vec![Int(2), Str("b".into()), Bool(true)]
        ]
    );
}

#[test]
fn dataframe_split_integer_and_duplicate_labels() {
    let parsed =
        request(r#"{"dataframe_split": {"columns": [0, "Age", "age"], "data": [[1, 30, 31]]}}"#);
    assert_eq!(parsed.columns, ["c_0", "age", "age_2"]);
    assert_eq!(parsed.rows, [vec![Int(1), Int(30), Int(31)]]);
}

#[test]
fn dataframe_records_missing_key_is_null() {
    let parsed = request(
        r#"{"dataframe_records": [{"sepal_length": 5.1, "species": "setosa"}, {"sepal_length": 6.2, "petal_width": 1.3}],
            "params": {"temperature": 0.5}}"#,
    );
    // Keys first seen in a later record come after the earlier ones.
    assert_eq!(
        parsed.columns.last().map(String::as_str),
        Some("petal_width")
    );
    assert_eq!(
        sorted_columns(&parsed),
        ["petal_width", "sepal_length", "species"]
    );
    assert_eq!(column(&parsed, "sepal_length"), [Float(5.1), Float(6.2)]);
    assert_eq!(column(&parsed, "species"), [Str("setosa".into()), Null]);
    assert_eq!(column(&parsed, "petal_width"), [Null, Float(1.3)]);
}

#[test]
fn dataframe_records_keys_that_sanitize_alike_stay_separate() {
    let parsed = request(r#"{"dataframe_records": [{"a b": 1, "a_b": 2}, {"a_b": 3}]}"#);
    assert_eq!(sorted_columns(&parsed), ["a_b", "a_b_2"]);
    let values: HashSet<String> = parsed.rows[0].iter().map(|v| format!("{v:?}")).collect();
    assert_eq!(
        values,
        HashSet::from(["Int(1)".to_owned(), "Int(2)".to_owned()])
    );
    assert_eq!(parsed.rows[1].iter().filter(|v| **v == Int(3)).count(), 1);
    assert_eq!(parsed.rows[1].iter().filter(|v| **v == Null).count(), 1);
}

#[test]
fn instances_list_of_lists() {
    let parsed = request(r#"{"instances": [[1.0, 2, -3], [4.5, 5, 6]]}"#);
    assert_eq!(parsed.columns, ["input_0", "input_1", "input_2"]);
    assert_eq!(
        parsed.rows,
        [
            vec![Float(1.0), Int(2), Int(-3)],
            vec![Float(4.5), Int(5), Int(6)]
        ]
    );
}

#[test]
fn instances_ragged_lists_are_null_padded() {
    let parsed = request(r#"{"instances": [[1], [2, 3]]}"#);
    assert_eq!(parsed.columns, ["input_0", "input_1"]);
    assert_eq!(parsed.rows, [vec![Int(1), Null], vec![Int(2), Int(3)]]);
}

#[test]
fn instances_list_of_scalars() {
    let parsed = request(r#"{"instances": ["the movie was great", "terrible"]}"#);
    assert_eq!(parsed.columns, ["input"]);
    assert_eq!(
        parsed.rows,
        [
            vec![Str("the movie was great".into())],
            vec![Str("terrible".into())]
        ]
    );
}

#[test]
fn instances_list_of_objects_keeps_nested_values_as_json() {
    let parsed = request(
        r#"{"signature_name": "serving_default",
            "instances": [{"tokens": [101, 2023, 102], "lang": "en"}, {"tokens": [101, 102], "meta": {"a": 1}}]}"#,
    );
    assert_eq!(sorted_columns(&parsed), ["lang", "meta", "tokens"]);
    assert_eq!(
        column(&parsed, "tokens"),
        [Json("[101,2023,102]".into()), Json("[101,102]".into())]
    );
    assert_eq!(column(&parsed, "lang"), [Str("en".into()), Null]);
    assert_eq!(column(&parsed, "meta"), [Null, Json(r#"{"a":1}"#.into())]);
}

#[test]
fn tf_serving_instances_with_b64() {
    let parsed = request(r#"{"instances": [{"image_bytes": {"b64": "aGVsbG8="}, "key": "1"}]}"#);
    assert_eq!(column(&parsed, "image_bytes"), [Bytes(b"hello".to_vec())]);
    assert_eq!(column(&parsed, "key"), [Str("1".into())]);

    let scalars = request(r#"{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ"}]}"#);
    assert_eq!(scalars.columns, ["input"]);
    assert_eq!(
        scalars.rows,
        [
            vec![Bytes(b"hello".to_vec())],
            vec![Bytes(b"world".to_vec())]
        ]
    );
}

#[test]
fn tf_serving_columnar_inputs() {
    let parsed = request(
        r#"{"signature_name": "serving_default",
            "inputs": {"tag": ["foo", "bar"], "signal": [[1, 2, 3], [3, 4, 1]], "image": [{"b64": "aGVsbG8="}, {"b64": ""}]}}"#,
    );
    assert_eq!(sorted_columns(&parsed), ["image", "signal", "tag"]);
    assert_eq!(
        column(&parsed, "tag"),
        [Str("foo".into()), Str("bar".into())]
    );
    assert_eq!(
        column(&parsed, "signal"),
        [Json("[1,2,3]".into()), Json("[3,4,1]".into())]
    );
    assert_eq!(
        column(&parsed, "image"),
        [Bytes(b"hello".to_vec()), Bytes(Vec::new())]
    );
}

#[test]
fn mlflow_inputs_named_scalars_are_one_row() {
    let parsed =
        request(r#"{"inputs": {"prompt": "Hello", "max_tokens": 64}, "params": {"seed": 1}}"#);
    assert_eq!(parsed.rows.len(), 1);
    assert_eq!(column(&parsed, "prompt"), [Str("Hello".into())]);
    assert_eq!(column(&parsed, "max_tokens"), [Int(64)]);
}

#[test]
fn mlflow_tensor_inputs_as_lists() {
    let parsed = request(r#"{"inputs": [[0.5, 1.5], [2.5, 3.5]]}"#);
    assert_eq!(parsed.columns, ["input_0", "input_1"]);
    assert_eq!(
        parsed.rows,
        [vec![Float(0.5), Float(1.5)], vec![Float(2.5), Float(3.5)]]
    );
}

#[test]
fn v2_request_fp32_matrix() {
    let parsed = request(
        r#"{"id": "42", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
            "data": [6.8, 2.8, 4.8, 1.4, 6, 3.4, 4.5, 1.6]}]}"#,
    );
    assert_eq!(
        parsed.columns,
        ["input_0_0", "input_0_1", "input_0_2", "input_0_3"]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Float(6.8), Float(2.8), Float(4.8), Float(1.4)],
            vec![Float(6.0), Float(3.4), Float(4.5), Float(1.6)],
        ]
    );
    let nested = request(
        r#"{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
            "data": [[6.8, 2.8, 4.8, 1.4], [6, 3.4, 4.5, 1.6]]}]}"#,
    );
    assert_eq!(nested, parsed);
}

#[test]
fn v2_request_several_named_tensors() {
    let parsed = request(
        r#"{"inputs": [
              {"name": "user_id", "shape": [3], "datatype": "INT64", "data": [17, 18, 19]},
              {"name": "Query Text", "shape": [3], "datatype": "BYTES", "data": ["shoes", "red hat", {"b64": "aGVsbG8="}]},
              {"name": "is_mobile", "shape": [3, 1], "datatype": "BOOL", "data": [[true], [false], [true]]},
              {"name": "max", "shape": [3], "datatype": "UINT64", "data": [0, 1, 18446744073709551615],
               "parameters": {"note": "ignored"}}],
            "outputs": [{"name": "score"}], "parameters": {"binary_data_output": false}}"#,
    );
    assert_eq!(
        parsed.columns,
        ["user_id", "query_text", "is_mobile", "max"]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Int(17), Str("shoes".into()), Bool(true), Int(0)],
            vec![Int(18), Str("red hat".into()), Bool(false), Int(1)],
            vec![
                Int(19),
                Bytes(b"hello".to_vec()),
                Bool(true),
                Float(18_446_744_073_709_551_615.0)
            ],
        ]
    );
}

#[test]
fn v2_scalar_and_empty_tensors() {
    let scalar = request(
        r#"{"inputs": [{"name": "temperature", "shape": [], "datatype": "FP64", "data": 0.7}]}"#,
    );
    assert_eq!(scalar.columns, ["temperature"]);
    assert_eq!(scalar.rows, [vec![Float(0.7)]]);

    let empty =
        request(r#"{"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}]}"#);
    assert_eq!(empty.columns, ["x_0", "x_1", "x_2"]);
    assert!(empty.rows.is_empty());
}

#[test]
fn csv_request_with_header_and_empty_field() {
    let body = "sepal length,species,verified,code\n5.1,setosa,TRUE,007\n6.2,,false,-3\n";
    let parsed =
        parse_request(body.as_bytes(), Some("text/csv; charset=utf-8")).expect("valid CSV");
    assert_invariants(&parsed, "");
    assert_eq!(
        parsed.columns,
        ["sepal_length", "species", "verified", "code"]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Float(5.1), Str("setosa".into()), Bool(true), Int(7)],
            vec![Float(6.2), Null, Bool(false), Int(-3)],
        ]
    );
}

#[test]
fn csv_quoted_fields_and_application_csv() {
    let body = "id,comment\n1,\"hello, \"\"world\"\"\"\n";
    let parsed = parse_request(body.as_bytes(), Some("Application/CSV")).expect("valid CSV");
    assert_eq!(parsed.rows, [vec![Int(1), Str("hello, \"world\"".into())]]);
}

#[test]
fn content_type_parameters_and_bom_are_ignored() {
    let body = "\u{feff}{\"instances\": [1, 2]}";
    let parsed = parse_request(body.as_bytes(), Some("application/json; charset=utf-8"))
        .expect("valid JSON");
    assert_eq!(parsed.rows, [vec![Int(1)], vec![Int(2)]]);
    let untyped = parse_request(br#"{"instances": [true]}"#, None).expect("valid JSON");
    assert_eq!(untyped.rows, [vec![Bool(true)]]);
}

#[test]
fn json_number_mapping() {
    let parsed = request(
        r#"{"instances": [9223372036854775807, -9223372036854775808, 9223372036854775808, 1.0, 1e3]}"#,
    );
    assert_eq!(
        column(&parsed, "input"),
        [
            Int(i64::MAX),
            Int(i64::MIN),
            Float(9_223_372_036_854_775_808.0),
            Float(1.0),
            Float(1000.0)
        ]
    );
}

// --------------------------------------------------------------- responses

#[test]
fn response_list_of_scalars() {
    let parsed = response(r#"{"predictions": [0, 2]}"#);
    assert_eq!(parsed.columns, ["prediction"]);
    assert_eq!(parsed.rows, [vec![Int(0)], vec![Int(2)]]);
}

#[test]
fn response_class_probabilities() {
    let parsed = response(r#"{"predictions": [[0.1, 0.7, 0.2]]}"#);
    assert_eq!(
        parsed.columns,
        ["prediction_0", "prediction_1", "prediction_2"]
    );
    assert_eq!(parsed.rows, [vec![Float(0.1), Float(0.7), Float(0.2)]]);

    let ragged = response(r#"{"predictions": [[1], [2, 3]]}"#);
    assert_eq!(ragged.rows, [vec![Int(1), Null], vec![Int(2), Int(3)]]);
}

#[test]
fn response_list_of_objects() {
    let parsed = response(
        r#"{"predictions": [{"label": "setosa", "score": 0.93}, {"label": "virginica", "Top K": [1, 2]}]}"#,
    );
    assert_eq!(
        sorted_columns(&parsed),
        ["prediction_label", "prediction_score", "prediction_top_k"]
    );
    assert_eq!(
        column(&parsed, "prediction_label"),
        [Str("setosa".into()), Str("virginica".into())]
    );
    assert_eq!(column(&parsed, "prediction_score"), [Float(0.93), Null]);
    assert_eq!(
        column(&parsed, "prediction_top_k"),
        [Null, Json("[1,2]".into())]
    );
}

#[test]
fn tf_serving_columnar_outputs() {
    let parsed =
        response(r#"{"outputs": {"scores": [[0.1, 0.9], [0.8, 0.2]], "classes": [1, 0]}}"#);
    assert_eq!(
        sorted_columns(&parsed),
        ["prediction_classes", "prediction_scores"]
    );
    assert_eq!(column(&parsed, "prediction_classes"), [Int(1), Int(0)]);
    assert_eq!(
        column(&parsed, "prediction_scores"),
        [Json("[0.1,0.9]".into()), Json("[0.8,0.2]".into())]
    );
}

#[test]
fn response_scalar_and_named_scalars() {
    let scalar = response(r#"{"predictions": "positive", "model_version": "3"}"#);
    assert_eq!(scalar.columns, ["prediction"]);
    assert_eq!(scalar.rows, [vec![Str("positive".into())]]);

    let named = response(r#"{"predictions": {"label": "spam", "confidence": 0.98}}"#);
    assert_eq!(named.rows.len(), 1);
    assert_eq!(column(&named, "prediction_label"), [Str("spam".into())]);
    assert_eq!(column(&named, "prediction_confidence"), [Float(0.98)]);
}

#[test]
fn v2_response_single_output() {
    let parsed = response(
        r#"{"model_name": "iris", "model_version": "1", "id": "42",
            "outputs": [{"name": "output-0", "shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.7, 0.2, 0.8, 0.1, 0.1]}]}"#,
    );
    assert_eq!(
        parsed.columns,
        ["prediction_0", "prediction_1", "prediction_2"]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Float(0.1), Float(0.7), Float(0.2)],
            vec![Float(0.8), Float(0.1), Float(0.1)]
        ]
    );

    let labels = response(
        r#"{"outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]}]}"#,
    );
    assert_eq!(labels.columns, ["prediction"]);
    assert_eq!(labels.rows, [vec![Int(1)], vec![Int(0)]]);
}

#[test]
fn v2_response_two_outputs() {
    let parsed = response(
        r#"{"model_name": "clf", "outputs": [
              {"name": "label", "shape": [2, 1], "datatype": "BYTES", "data": ["cat", "dog"]},
              {"name": "probs", "shape": [2, 2], "datatype": "FP64", "data": [[0.9, 0.1], [0.3, 0.7]]}]}"#,
    );
    assert_eq!(
        parsed.columns,
        [
            "prediction_label",
            "prediction_probs_0",
            "prediction_probs_1"
        ]
    );
    assert_eq!(
        parsed.rows,
        [
            vec![Str("cat".into()), Float(0.9), Float(0.1)],
            vec![Str("dog".into()), Float(0.3), Float(0.7)],
        ]
    );
}

#[test]
fn bare_array_response() {
    let parsed = response("[1.5, 2.5]");
    assert_eq!(parsed.columns, ["prediction"]);
    assert_eq!(parsed.rows, [vec![Float(1.5)], vec![Float(2.5)]]);
}

#[test]
fn csv_responses() {
    let single = parse_response(b"Score\n0.25\n0.75\n", CSV).expect("valid CSV");
    assert_eq!(single.columns, ["prediction"]);
    assert_eq!(single.rows, [vec![Float(0.25)], vec![Float(0.75)]]);

    let several = parse_response(b"label,Score\nspam,0.9\n", CSV).expect("valid CSV");
    assert_eq!(several.columns, ["prediction_label", "prediction_score"]);
    assert_eq!(several.rows, [vec![Str("spam".into()), Float(0.9)]]);
}

#[test]
fn empty_lists_give_no_rows() {
    assert_eq!(request(r#"{"instances": []}"#), Instances::default());
    assert_eq!(response(r#"{"predictions": []}"#), Instances::default());
}

// ------------------------------------------------------------------ errors

#[test]
fn not_json_is_an_error() {
    assert_eq!(
        request_error("sepal_length=5.1"),
        "request is not JSON: expected value at line 1 column 1"
    );
    assert!(response_error(r#"{"predictions": [1,"#).starts_with("response is not JSON: "));
}

#[test]
fn unknown_shapes_are_errors() {
    assert_eq!(
        request_error(r#"{"foo": 1}"#),
        "unrecognised request shape: object with keys [foo]"
    );
    assert_eq!(request_error("[1, 2]"), "unrecognised request shape: array");
    assert_eq!(
        request_error(r#"{"instances": [1], "foo": 2}"#),
        "unrecognised request shape: unexpected key foo next to instances"
    );
    assert_eq!(
        request_error(r#"{"instances": [1], "inputs": [2]}"#),
        "unrecognised request shape: both instances and inputs present"
    );
    assert_eq!(
        response_error(r#"{"model_name": "m", "result": [1]}"#),
        "unrecognised response shape: object with keys [model_name, result]"
    );
    assert_eq!(response_error("0.5"), "unrecognised response shape: number");
}

#[test]
fn malformed_lists_are_errors() {
    assert_eq!(
        request_error(r#"{"instances": [[1, 2], 3]}"#),
        "instances mixes element kinds: instances[0] is a list but instances[1] is a scalar"
    );
    assert_eq!(
        request_error(r#"{"dataframe_records": [{"a": 1}, 2]}"#),
        "dataframe_records[1] is not an object"
    );
    assert_eq!(
        request_error(r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}"#),
        "dataframe_split.data[1] has 1 values but there are 2 columns"
    );
    assert_eq!(
        request_error(r#"{"instances": {"a": 1}}"#),
        "instances is not a list"
    );
}

#[test]
fn inputs_columns_of_different_lengths() {
    assert_eq!(
        request_error(r#"{"inputs": {"a": [1, 2, 3], "b": [4, 5]}}"#),
        "inputs columns have different lengths: a has 3, b has 2"
    );
    assert_eq!(
        response_error(r#"{"outputs": {"a": [1], "b": []}}"#),
        "outputs columns have different lengths: a has 1, b has 0"
    );
}

#[test]
fn invalid_b64_is_an_error() {
    let message = request_error(r#"{"instances": [{"b64": "not base64!"}]}"#);
    assert!(
        message.starts_with(r#"invalid base64 in {"b64": "not base64!"}: "#),
        "{message}"
    );
    assert_eq!(
        request_error(r#"{"instances": [{"b64": 5}]}"#),
        r#"invalid {"b64": ...} value: not a string"#
    );
}

#[test]
fn v2_shape_data_mismatch() {
    assert_eq!(
        request_error(
            r#"{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}"#
        ),
        "v2 input input-0: shape [2, 4] needs 8 values but data has 6"
    );
    assert_eq!(
        request_error(
            r#"{"inputs": [{"name": "a", "shape": [2], "datatype": "INT32", "data": [1, 2]},
                           {"name": "b", "shape": [3], "datatype": "INT32", "data": [1, 2, 3]}]}"#
        ),
        "v2 inputs disagree on batch size: a has 2 rows, b has 3"
    );
}

#[test]
fn v2_huge_shape_is_rejected_before_allocating() {
    let tensor = |shape: &str| {
        format!(
            r#"{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP32", "data": [1]}}]}}"#
        )
    };
    assert_eq!(
        request_error(&tensor("[1e12, 1e12]")),
        "v2 input x: shape must be a list of non-negative integers"
    );
    assert_eq!(
        request_error(&tensor("[1000000000000, 1000000000000]")),
        "v2 input x: shape [1000000000000, 1000000000000] is too large"
    );
    assert_eq!(
        request_error(&tensor("[0, 4294967296, 4294967296]")),
        "v2 input x: shape [0, 4294967296, 4294967296] is too large"
    );
    assert_eq!(
        request_error(&tensor("[1000000, 1000000]")),
        "v2 input x: 1000000 elements per row exceed the limit of 10000 columns"
    );
    assert_eq!(
        request_error(&tensor("[2000000]")),
        "v2 input x: 2000000 rows exceed the limit of 1000000"
    );
    assert_eq!(
        request_error(&tensor("[1000, 1000]")),
        "v2 input x: shape [1000, 1000] needs 1000000 values but data has 1"
    );
    assert_eq!(
        request_error(&tensor(&format!("[{}]", vec!["1"; 65].join(", ")))),
        "v2 input x: shape has more than 64 dimensions"
    );
    assert_eq!(
        request_error(&tensor("[-1, 4]")),
        "v2 input x: shape must be a list of non-negative integers"
    );
}

#[test]
fn v2_type_errors() {
    assert_eq!(
        request_error(
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}]}"#
        ),
        "v2 input x: INT32 data contains a fractional number"
    );
    assert_eq!(
        response_error(
            r#"{"outputs": [{"name": "y", "shape": [1], "datatype": "COMPLEX64", "data": [1]}]}"#
        ),
        "v2 output y: unsupported datatype COMPLEX64"
    );
    assert_eq!(
        request_error(
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}"#
        ),
        "v2 input x: has no data (binary tensor data is not supported)"
    );
}

#[test]
fn csv_errors() {
    let ragged = parse_request(b"a,b\n1,2\n3\n", CSV).expect_err("ragged CSV");
    assert!(
        ragged.0.starts_with("request CSV is malformed: "),
        "{ragged}"
    );
    let binary = parse_request(b"a\n\xff\xfe\n", CSV).expect_err("invalid UTF-8");
    assert!(
        binary.0.starts_with("request CSV is malformed: "),
        "{binary}"
    );
}

#[test]
fn size_limits() {
    let wide = format!("{{\"instances\": [[{}]]}}", vec!["0"; 10_001].join(","));
    assert_eq!(request_error(&wide), "payload has more than 10000 columns");

    let tall = format!("[{}]", vec!["0"; 1_000_001].join(","));
    assert_eq!(response_error(&tall), "payload has more than 1000000 rows");

    // One wide record followed by many empty ones would be Null-padded to
    // 5,000 × 2,001 cells.
    let keys: Vec<String> = (0..5_000).map(|i| format!("\"k{i}\": 1")).collect();
    let sparse = format!(
        "{{\"dataframe_records\": [{{{}}}{}]}}",
        keys.join(","),
        ",{}".repeat(2_000)
    );
    assert_eq!(
        request_error(&sparse),
        "payload has more than 10000000 cells"
    );

    let deep = format!("{{\"instances\": {}}}", "[".repeat(100_000));
    assert!(request_error(&deep).starts_with("request is not JSON: recursion limit exceeded"));
}

#[test]
fn error_messages_stay_on_one_short_line() {
    let key = format!("evil\nkey{}", "x".repeat(1_000));
    let message = request_error(&format!("{{\"{}\": 1}}", key.replace('\n', "\\n")));
    assert!(!message.contains('\n'), "{message}");
    assert!(message.len() < 200, "{message}");
}

// ------------------------------------------------------------ robustness

/// Pieces a mutation splices in: the syntax and the keys the parsers branch on.
const TOKENS: &[&str] = &[
    "[", "]", "{", "}", ",", ":", "\"", "null", "true", "-1", "0", "1e400", "18446744073709551615",
    r#"{"b64": "!!"}"#, r#"{"b64": "aGk="}"#, r#""shape": [1000000000000, 1000000000000]"#, r#""shape": []"#,
    r#""datatype": "UINT8""#, r#""name": "x""#, r#""data": ["#, r#""inputs": "#, r#""instances": "#,
    r#""predictions": "#, r#""outputs": "#, r#""dataframe_split": "#, r#""columns": "#, "\n", "\r\n",
    "\u{feff}", "\u{e9}", "\\u0000",
];

/// One edit of a corpus input; positions are taken modulo the body's length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Token(usize, usize),
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        (any::<usize>(), 0usize..16).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Token(at, token)),
        (any::<usize>(), 0usize..32, any::<usize>()).prop_map(|(at, len, to)| Mutation::Duplicate(at, len, to)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(body: &mut Vec<u8>, mutation: &Mutation) {
    let at = |i: usize, body: &Vec<u8>| i % (body.len() + 1);
    match *mutation {
        Mutation::FlipBit(i, bit) if !body.is_empty() => {
            let i = i % body.len();
            body[i] ^= 1 << bit;
        }
        Mutation::FlipBit(..) => {}
        Mutation::Insert(i, byte) => body.insert(at(i, body), byte),
        Mutation::Delete(i, len) => {
            let start = at(i, body);
            body.drain(start..(start + len).min(body.len()));
        }
        Mutation::Token(i, token) => {
            let start = at(i, body);
            body.splice(start..start, TOKENS[token].bytes());
        }
        Mutation::Duplicate(i, len, to) => {
            let start = at(i, body);
            let copy = body[start..(start + len).min(body.len())].to_vec();
            let to = at(to, body);
            body.splice(to..to, copy);
        }
        Mutation::Truncate(i) => body.truncate(at(i, body)),
    }
}

fn check_both_parsers(body: &[u8], content_type: Option<&str>) -> usize {
    let mut parsed = 0;
    if let Ok(instances) = parse_request(body, content_type) {
        assert_invariants(&instances, "");
        parsed += 1;
    }
    if let Ok(instances) = parse_response(body, content_type) {
        assert_invariants(&instances, "prediction");
        parsed += 1;
    }
    parsed
}

static CORPUS: std::sync::LazyLock<Vec<(String, Vec<u8>)>> =
    std::sync::LazyLock::new(|| inferlog_core::fuzz_corpus::load("payload"));
const CONTENT_TYPES: [Option<&str>; 4] = [None, JSON, CSV, Some("text/plain")];

proptest! {
    // `PROPTEST_CASES=200000 cargo test --release -p inferlog-payload` for a longer run;
    // failures are kept in proptest-regressions/ and replayed first.
    #![proptest_config(ProptestConfig { cases: inferlog_core::fuzz_corpus::cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_inputs_never_panic(
        seed in 0..CORPUS.len(),
        mutations in proptest::collection::vec(mutation(), 0..6),
        content_type in 0..CONTENT_TYPES.len(),
    ) {
        let mut body = CORPUS[seed].1.clone();
        for m in &mutations {
            apply(&mut body, m);
        }
        check_both_parsers(&body, CONTENT_TYPES[content_type]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), content_type in 0..CONTENT_TYPES.len()) {
        check_both_parsers(&body, CONTENT_TYPES[content_type]);
    }
}

#[test]
fn every_corpus_input_parses_or_fails_cleanly() {
    for (name, body) in CORPUS.iter() {
        let content_type = if name.ends_with(".csv") { CSV } else { JSON };
        let parsed = check_both_parsers(body, content_type);
        // The valid ones must stay valid: they are the seeds the mutations start from.
        assert!(!name.starts_with("valid-") || parsed > 0, "{name} does not parse");
    }
}
