"""Reads a Delta table from the test S3 server with another engine and prints its rows.

Usage: python s3_read.py ENGINE TABLE_URI [SQL]

ENGINE is deltalake, polars or duckdb; `protocol` prints the table's Delta protocol instead (its
reader and writer versions and features), read with deltalake; `list` prints the names of the
objects under TABLE_URI (any prefix), one JSON string a line, and `cat` the bytes of the
object TABLE_URI names, both read with boto3. The S3 server comes from the environment: AWS_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ALLOW_HTTP for an http endpoint).
SQL runs over the table registered under the last segment of TABLE_URI, as `inferlog query` names
it (s3://inferlog/tables/iris_payload is iris_payload); without it (or with an empty one) the
whole table is read. Each row is printed as one JSON object, rows sorted by request_id when the
result has that column; maps become objects and other non-JSON values (dates, timestamps) strings.
"""

import json
import os
import pathlib
import sys
from urllib.parse import urlparse

import pyarrow as pa


def storage_options():
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def read_deltalake(uri, name, sql):
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options())
    return pa.table(QueryBuilder().register(name, table).execute(sql).read_all())


def read_polars(uri, name, sql):
    import polars as pl

    frame = pl.scan_delta(uri, storage_options=storage_options(), credential_provider=None)
    return pl.SQLContext({name: frame}).execute(sql).collect().to_arrow()


def read_duckdb(uri, name, sql):
    import duckdb
    import duckdb_extension_delta
    import duckdb_extension_httpfs

    con = duckdb.connect()
    # The extensions come from their wheels (DuckDB would otherwise download them), and load only
    # into the DuckDB version they were built for, which the wheels' folder names.
    for module, ext in [(duckdb_extension_httpfs, "httpfs"), (duckdb_extension_delta, "delta")]:
        path = pathlib.Path(module.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{ext}.duckdb_extension"
        con.execute(f"LOAD '{path}'")
    # TIMESTAMPTZ columns come out in the session's time zone; the other engines give UTC.
    con.execute("SET TimeZone = 'UTC'")
    endpoint = urlparse(os.environ["AWS_ENDPOINT_URL"])
    con.execute(
        "CREATE SECRET (TYPE S3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL ?)",
        [
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_REGION", "us-east-1"),
            endpoint.netloc,
            endpoint.scheme == "https",
        ],
    )
    con.execute(f"CREATE VIEW \"{name}\" AS SELECT * FROM delta_scan('{uri}')")
    return con.sql(sql).to_arrow_table()


READERS = {"deltalake": read_deltalake, "polars": read_polars, "duckdb": read_duckdb}


def print_protocol(uri):
    from deltalake import DeltaTable

    protocol = DeltaTable(uri, storage_options=storage_options()).protocol()
    print(json.dumps({
        "min_reader_version": protocol.min_reader_version,
        "min_writer_version": protocol.min_writer_version,
        "reader_features": protocol.reader_features,
        "writer_features": protocol.writer_features,
    }))


def list_objects(uri):
    import boto3

    parsed = urlparse(uri)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    prefix = parsed.path.lstrip("/").rstrip("/") + "/"
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            print(json.dumps(item["Key"][len(prefix):]))


def cat_object(uri):
    import boto3

    parsed = urlparse(uri)
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    sys.stdout.buffer.write(s3.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read())


def main():
    engine, uri = sys.argv[1], sys.argv[2]
    if engine == "cat":
        return cat_object(uri)
    if engine == "protocol":
        return print_protocol(uri)
    if engine == "list":
        return list_objects(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    sql = (sys.argv[3] if len(sys.argv) > 3 else "") or f'SELECT * FROM "{name}"'
    rows = READERS[engine](uri, name, sql).to_pylist(maps_as_pydicts="strict")
    if rows and "request_id" in rows[0]:
        rows.sort(key=lambda row: str(row["request_id"]))
    for row in rows:
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
