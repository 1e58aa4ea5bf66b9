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
    for setting in imgproxy_cache::proxy::config::SETTINGS {
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
    for setting in imgproxy_cache::proxy::config::SETTINGS {
        assert!(
            readme.contains(&format!("`{}`", setting.name)),
            "README lacks `{}`",
            setting.name
        );
    }
}

/// `url --json` prints the stable fields; the key is the proxy's rule over the signed path.
#[test]
fn url_prints_signed_and_cached_urls_as_json() {
    let out = imgproxy_cache()
        .args([
            "url",
            "--json",
            "--options",
            "rs:fit:300:300",
            "--ext",
            "webp",
        ])
        .arg("https://example.com/a.jpg")
        .env("IMGPROXY_KEY", "736563726574")
        .env("IMGPROXY_SALT", "68656C6C6F")
        .env("S3_FOLDER", "thumbs/")
        .env("PROXY_BASE_URL", "https://img.example")
        .env("CACHE_BASE_URL", "https://cdn.example/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = v["path"].as_str().unwrap();
    assert!(
        path.ends_with("/rs:fit:300:300/plain/https://example.com/a.jpg@webp"),
        "{path}"
    );
    let key = imgproxy_cache::cache::cache_key("thumbs/", path);
    assert_eq!(v["key"], key.as_str());
    assert_eq!(
        v["proxy_url"],
        format!("https://img.example{path}").as_str()
    );
    assert_eq!(
        v["cached_url"],
        format!("https://cdn.example/{key}").as_str()
    );
}

/// With the proxy's negotiation settings, `url --json` names the variant keys a page offers as
/// `<picture>` sources; a format fixed in the URL under `AUTO_` only leaves none, and a bad
/// setting is refused naming it.
#[test]
fn url_prints_the_variants_the_negotiation_stores() {
    let run = |ext: Option<&str>, negotiation: (&str, &str)| {
        let mut command = imgproxy_cache();
        command.args(["url", "--json"]);
        if let Some(ext) = ext {
            command.args(["--ext", ext]);
        }
        command
            .arg("https://example.com/a.jpg")
            .env("IMGPROXY_AUTO_WEBP", "true")
            .env("IMGPROXY_AUTO_AVIF", "true")
            .env(negotiation.0, negotiation.1)
            .env("CACHE_BASE_URL", "https://cdn.example")
            .output()
            .unwrap()
    };
    let out = run(None, ("S3_FOLDER", "thumbs/"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = v["key"].as_str().unwrap();
    assert!(key.starts_with("thumbs/"), "{v}");
    assert_eq!(
        v["variants"],
        serde_json::json!([
            {"type": "image/avif", "class": "avif-webp", "key": format!("{key}-avif-webp"),
             "cached_url": format!("https://cdn.example/{key}-avif-webp")},
            {"type": "image/webp", "class": "webp", "key": format!("{key}-webp"),
             "cached_url": format!("https://cdn.example/{key}-webp")},
        ])
    );

    let fixed = run(Some("jpg"), ("S3_FOLDER", ""));
    let v: serde_json::Value = serde_json::from_slice(&fixed.stdout).unwrap();
    assert_eq!(v["variants"], serde_json::json!([]), "{v}");
    let enforced = run(Some("jpg"), ("UPSTREAM_NEGOTIATION", "enforce_webp"));
    let v: serde_json::Value = serde_json::from_slice(&enforced.stdout).unwrap();
    assert_eq!(v["variants"][0]["class"], "webp", "{v}");
    assert_eq!(v["variants"].as_array().unwrap().len(), 1, "{v}");

    let bad = run(None, ("UPSTREAM_NEGOTIATION", "auto_jxl"));
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("UPSTREAM_NEGOTIATION") && stderr.contains("auto_jxl"),
        "{stderr}"
    );
}

/// A bad key is refused with a message naming the variable.
#[test]
fn url_refuses_a_bad_key() {
    let out = imgproxy_cache()
        .args(["url", "https://example.com/a.jpg"])
        .env("IMGPROXY_KEY", "not-hex")
        .env("IMGPROXY_SALT", "00")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMGPROXY_KEY"));
}
