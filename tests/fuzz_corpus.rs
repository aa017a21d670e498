//! Every file of every fuzz corpus (fuzz/corpus/<target>/) through the same
//! entry points the fuzz targets call (`ringway::fuzzing`), on stable and
//! without a fuzzer, so a parser change that breaks an invariant on a seed
//! or on a crash input found before fails `cargo test`.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use ringway::fuzzing::TARGETS;

/// Files checked in per target. Reading fewer means a folder was moved or
/// emptied, which must fail this test rather than let it pass on nothing.
/// Raise a count when adding files.
const CHECKED_IN: [(&str, usize); 7] = [
    ("request_head", 15),
    ("response_head", 9),
    ("agent_frame", 10),
    ("authorization", 10),
    ("session_id", 82),
    ("percent", 137),
    ("config", 11),
];

#[test]
fn every_corpus_file_holds_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let expected: BTreeMap<&str, usize> = CHECKED_IN.into_iter().collect();
    let mut read = BTreeMap::new();
    let mut failures = Vec::new();
    for (target, entry) in TARGETS {
        let dir = root.join(target);
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for file in files {
            let path = file.expect("a directory entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
                failures.push(path.display().to_string());
            }
            count += 1;
        }
        read.insert(target, count);
    }
    assert!(failures.is_empty(), "inputs that break an invariant: {failures:#?}");
    for (target, want) in &expected {
        let got = read.get(target).copied().unwrap_or(0);
        assert!(got >= *want, "{target}: read {got} corpus files, {want} are checked in");
    }
    // Every target has a count, and every corpus folder is a target's.
    let mut targets: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    targets.sort_unstable();
    assert_eq!(targets, expected.keys().copied().collect::<Vec<_>>());
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .expect("fuzz/corpus")
        .map(|d| d.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort_unstable();
    assert_eq!(dirs, targets, "a corpus folder no target reads");
}
