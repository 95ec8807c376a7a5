//! The kept fuzzing corpus (`fuzz/corpus/{target}/` at the repository root): inputs the
//! parsers' property tests start from and mutate — valid payloads of every format, and the
//! hostile ones that once needed care (deep nesting, huge numbers, invalid UTF-8, ...).
//! proptest keeps the failing cases it finds under `proptest-regressions/` and replays them
//! first; an input worth keeping for good is added here. Only built for tests (the
//! `fuzz-corpus` feature), as it reads files of the source tree.

use std::path::PathBuf;

/// The corpus of one fuzzing target, by file name, sorted.
pub fn load(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzzing corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the fuzzing corpus {} is empty", dir.display());
    files
}

/// How many cases a property test runs: `default`, or `PROPTEST_CASES` when set (for longer
/// runs; a config that names its own case count would otherwise ignore the variable).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
