//! The fuzz targets' inputs, replayed in the normal suite: every file under `fuzz/corpus/<target>/`
//! (the seeds) and `fuzz/regressions/<target>/` (each crash the fuzzer found, minimised) goes
//! through the same `imgproxy_cache::fuzzing` function the libFuzzer target calls. The sanitizer
//! build is too slow for CI; this keeps the targets' logic compiling and every crash fixed.
// Tests of the bundled worker, or of the binary running it.
#![cfg(feature = "worker")]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use imgproxy_cache::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it doesn't exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("fuzz folder is readable").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Every corpus and regression input runs through its target without a panic (the targets'
/// own invariants included). Collects every failure before failing, so one run names them all.
#[test]
fn every_corpus_and_regression_input_replays_cleanly() {
    let mut failed = Vec::new();
    let mut replayed = 0;
    for target in TARGETS {
        for folder in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(folder).join(target.name)) {
                let data = std::fs::read(&path).expect("fuzz input is readable");
                replayed += 1;
                if catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
                    failed.push(path.display().to_string());
                }
            }
        }
    }
    assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
    assert!(replayed > 0, "no fuzz inputs found under {:?}", fuzz_dir());
}

/// Each target has seeds to start from, a `[[bin]]` in `fuzz/Cargo.toml` and a source file
/// that calls its `fuzzing` function; no folder names a target that doesn't exist. Keeps the
/// list in `fuzzing::TARGETS`, the fuzz crate and `scripts/fuzz` (which reads the crate's
/// targets) in step.
#[test]
fn every_target_has_seeds_and_a_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml exists");
    for target in TARGETS {
        let name = target.name;
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name}/ has no seeds"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|_| panic!("fuzz/fuzz_targets/{name}.rs is missing"));
        assert!(
            source.contains("imgproxy_cache::fuzzing::"),
            "fuzz/fuzz_targets/{name}.rs doesn't call the shared fuzzing module"
        );
    }
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(folder)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("fuzz folder is readable").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|t| t.name == name),
                "fuzz/{folder}/{name} names no target"
            );
        }
    }
}

/// `scripts/fuzz` builds the fuzz workspace with its own lock file and must not change it
/// (`cargo metadata --locked`): a dependency added to the product without `fuzz/Cargo.lock`
/// following stops fuzzing before the first target runs.
#[test]
fn the_fuzz_lock_file_follows_the_product() {
    let manifest = fuzz_dir().join("Cargo.toml");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "fuzz/Cargo.lock is stale; run `cargo metadata --offline --format-version 1 \
         --manifest-path fuzz/Cargo.toml` and commit it:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
