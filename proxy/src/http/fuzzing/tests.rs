//! The fuzz entries run over their seed corpora (`fuzz/corpus/<target>/`) and over every
//! input a fuzz run found a crash with (`fuzz/regressions/<target>/`, fixed since): a crash
//! comes back here as a failing unit test, without a fuzzer.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).expect("reading a corpus file");
            out.push((e.path(), bytes));
        }
    }
    out
}

fn replay(target: &str, entry: fn(&[u8]), at_least: usize) {
    let all = inputs(target);
    assert!(
        all.len() >= at_least,
        "{target}: {} inputs under fuzz/corpus and fuzz/regressions, expected {at_least}",
        all.len()
    );
    for (path, bytes) in all {
        // Each read size too: the first byte of an input picks it.
        for step in [0u8, 6, 255] {
            let mut input = bytes.clone();
            if let Some(first) = input.first_mut() {
                *first = step;
            }
            let run = std::panic::catch_unwind(|| entry(&input));
            assert!(
                run.is_ok(),
                "{target}: {} (read size {step})",
                path.display()
            );
        }
    }
}

#[test]
fn request_corpus() {
    replay("request", super::request, 5);
}

#[test]
fn response_corpus() {
    replay("response", super::response, 5);
}

#[test]
fn cookie_corpus() {
    replay("cookie", super::cookie, 3);
}

#[test]
fn h2_corpus() {
    replay("h2", super::h2_frames, 2);
}
