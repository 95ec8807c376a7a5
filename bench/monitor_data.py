"""Writes the monitoring benchmark's data: `{data_dir}/tables/bench_unpacked`, a Delta table
shaped like an unpacked table (ROWS rows in one day, 14 numeric and 6 categorical features,
a prediction), and `reference.parquet`, a training set of REFERENCE rows of the same features
before the drift.

Usage: monitor_data.py DATA_DIR REFERENCE.parquet DAY(YYYY-MM-DD) [ROWS] [REFERENCE]
"""

import datetime as dt
import sys
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

NUMERIC = 14
CATEGORICAL = 6
# Features f0..f4 and c0 drift in the current data.
DRIFTED_NUMERIC = 5


def features(rng, n, drifted):
    columns = {}
    for i in range(NUMERIC):
        mean, std = 10.0 * i, 1.0 + i / 4
        shift = 0.3 * std if drifted and i < DRIFTED_NUMERIC else 0.0
        values = rng.normal(mean + shift, std, n)
        if i % 4 == 3:
            values = np.round(values)  # some whole-number features
        columns[f"f{i}"] = values
    for i in range(CATEGORICAL):
        k = 4 + 7 * i
        p = np.arange(1, k + 1, dtype=float)[::-1]
        if drifted and i == 0:
            p = p[::-1]
        categories = np.array([f"c{i}_v{j}" for j in range(k)] + ["unseen"])
        if drifted:
            p = np.append(p, p.sum() * 0.001)
        else:
            p = np.append(p, 0.0)
        columns[f"c{i}"] = categories[rng.choice(len(categories), n, p=p / p.sum())]
    return columns


def main():
    data_dir, reference_path, day = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
    reference_rows = int(sys.argv[5]) if len(sys.argv) > 5 else 100_000
    rng = np.random.default_rng(7)

    pq.write_table(pa.table(features(rng, reference_rows, drifted=False)), reference_path)

    start = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    columns = {
        "request_id": [str(uuid.UUID(int=int(i))) for i in rng.integers(0, 2**63, rows)],
        "client_request_id": pa.nulls(rows, pa.string()),
        "row_index": np.zeros(rows, dtype=np.int64),
        "date": pa.array([dt.date.fromisoformat(day)] * rows, pa.date32()),
        "timestamp_ms": np.sort(start + rng.integers(0, 86_400_000, rows)).astype(np.int64),
        "model_version": rng.choice(["1", "2"], rows),
        "status_code": np.full(rows, 200, dtype=np.int32),
        "unpack_error": pa.nulls(rows, pa.string()),
    }
    columns.update(features(rng, rows, drifted=True))
    columns["prediction"] = rng.choice(["a", "b", "c"], rows)
    table = pa.table(columns)
    # Several files, as an unpacked table written pass by pass and compacted.
    for offset in range(0, rows, 250_000):
        write_deltalake(f"{data_dir}/tables/bench_unpacked", table.slice(offset, 250_000),
                        partition_by=["date"], mode="append")


if __name__ == "__main__":
    main()
