//! The binary as an operator meets it: help, version, configuration errors.

use std::process::Command;

fn imgproxy_cache() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgproxy-cache"));
    cmd.env_clear();
    cmd
}

/// A bad setting stops start-up with the variable and the value in the message.
#[test]
fn config_errors_name_the_variable_and_value() {
    let out = imgproxy_cache()
        .env("UPLOAD_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UPLOAD_CONCURRENCY") && stderr.contains("lots"),
        "{stderr}"
    );
}

/// `--help` lists every setting the proxy reads; `--version` prints the version.
#[test]
fn help_lists_every_setting() {
    let out = imgproxy_cache().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for setting in imgproxy_cache::config::SETTINGS {
        assert!(help.contains(setting.name), "--help lacks {}", setting.name);
    }
    let out = imgproxy_cache().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// The README's settings table has a row for every setting.
#[test]
fn readme_documents_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for setting in imgproxy_cache::config::SETTINGS {
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README lacks `{}`",
            setting.name
        );
    }
}
