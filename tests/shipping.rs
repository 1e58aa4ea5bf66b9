//! The Dockerfile cannot be built on machines without a Docker engine, so it stays a thin
//! wrapper over what the end-to-end test runs; these checks keep it honest.

use std::path::Path;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every `COPY` from the build context names a file or directory that exists, and the
/// runtime images start the entrypoint and configuration the end-to-end test runs.
#[test]
fn dockerfile_copies_what_exists_and_runs_the_tested_entrypoint() {
    let dockerfile = repo_file("Dockerfile");
    let mut copies = 0;
    for line in dockerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = args
            .split_whitespace()
            .filter(|a| !a.starts_with("--"))
            .collect();
        for source in &parts[..parts.len() - 1] {
            copies += 1;
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
            assert!(
                path.exists(),
                "Dockerfile copies {source}, which does not exist"
            );
        }
    }
    assert!(copies >= 4, "found only {copies} COPY sources");
    for shipped in [
        "COPY supervisord.conf /etc/imgproxy-cache/supervisord.conf",
        "COPY docker/entrypoint /usr/local/bin/docker-entrypoint",
        "COPY docker/exit-listener.py /usr/local/lib/imgproxy-cache/exit-listener.py",
        "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint\"]",
    ] {
        assert!(dockerfile.contains(shipped), "Dockerfile lacks `{shipped}`");
    }
    // The entrypoint's defaults point where the Dockerfile puts things.
    let entrypoint = repo_file("docker/entrypoint");
    for default in [
        "/usr/local/bin/imgproxy-cache",
        "/etc/imgproxy-cache/supervisord.conf",
        "/usr/local/lib/imgproxy-cache/exit-listener.py",
    ] {
        assert!(
            entrypoint.contains(default),
            "docker/entrypoint lacks the default {default}"
        );
    }
}
