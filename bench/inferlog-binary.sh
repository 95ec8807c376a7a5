# Sourced by the benchmarks: sets INFERLOG to the binary to measure and build_label to how it
# was made. BENCH_INFERLOG=path (and BENCH_LABEL=text) uses that binary and builds nothing;
# otherwise the workspace is built in release (the whole workspace, so its features match the
# test build's and dependencies are not compiled twice).
if [ -n "${BENCH_INFERLOG:-}" ]; then
  INFERLOG="$BENCH_INFERLOG"
  build_label="${BENCH_LABEL:-the binary $INFERLOG}"
else
  build_label="release build"
  cargo build --release --locked --workspace
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  INFERLOG="$target_dir/release/inferlog"
fi
