#!/usr/bin/env bash
# One monitoring window of 1,000,000 rows × 20 features (14 numeric, 6 categorical) against a
# baseline of 100,000 rows: wall time and peak memory of `inferlog monitor`.
#
#   bench/monitor.sh [rows] [reference_rows]     (defaults 1000000 100000)
#   BENCH_INFERLOG=path/to/inferlog [BENCH_LABEL=text] bench/monitor.sh   (use that binary, build nothing)
#
# bench/monitor_data.py writes `bench_unpacked` (a Delta table shaped like an unpacked table,
# all rows in one day, 5 numeric features and 1 categorical feature drifted, a category the
# baseline never saw) and reference.parquet; `inferlog baseline` summarizes the reference, then
# `inferlog monitor --window 1d` runs over the day three times under /usr/bin/time. Writes
# bench/MONITOR.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
reference_rows="${2:-100000}"

. bench/inferlog-binary.sh
python=$(scripts/python-env)
[ -x /usr/bin/time ] || { echo "bench/monitor.sh needs /usr/bin/time (Debian package time)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
day=$(date -u -d yesterday +%F)
next=$(date -u +%F)
echo "writing $rows rows and a reference of $reference_rows"
"$python" bench/monitor_data.py "$work/data" "$work/reference.parquet" "$day" "$rows" "$reference_rows"
"$INFERLOG" baseline bench --from "$work/reference.parquet" --data-dir "$work/data" >/dev/null

runs=()
for i in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$work/time" \
    "$INFERLOG" monitor bench --window 1d --since "$day" --until "$next" --data-dir "$work/data" >"$work/out"
  runs+=("$(cat "$work/time")")
  echo "run $i: $(cat "$work/time") (seconds, peak KiB); $(head -1 "$work/out")"
done
summary=$(head -1 "$work/out")
table=$(printf '%s\n' "${runs[@]}" | python3 -c '
import sys
runs = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
walls = sorted(r[0] for r in runs)
print(f"| wall time, median of {len(runs)} | {walls[len(walls)//2]:.2f} s (min {walls[0]:.2f}, max {walls[-1]:.2f}) |")
print(f"| peak memory (max RSS) | {max(r[1] for r in runs)/1024:.0f} MiB |")
')
cat > bench/MONITOR.md <<MD
# Monitoring benchmark

\`bench/monitor.sh $rows $reference_rows\` on $(nproc) cores, $(date -u +%F), $build_label.
One window (one day) of $rows rows × 20 features (14 numeric, 6 categorical with 4 to 39
categories) read from a Delta table of 4 files, against a baseline of $reference_rows rows:
data quality, drift against the baseline (all five numeric / four categorical metrics per
feature) and violations, written to the three metric tables.

| | |
|---|---|
$table

Output: $summary
MD
cat bench/MONITOR.md
