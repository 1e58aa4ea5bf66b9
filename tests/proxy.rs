//! The proxy end to end: a real upstream, a real S3 server, the real server loop.

mod common;

use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

/// A 200 is streamed back unchanged and stored under md5(path) with the upstream's type and
/// cache control, byte for byte.
#[tokio::test]
async fn stores_each_success_under_the_md5_of_its_path() {
    let upstream = Upstream::start().await;
    let s3 = S3::start().await;
    let proxy = Proxy::start(config(&upstream, &[]), s3.store()).await;

    let path = "/ok/rs:fit:300:300/plain/https://example.com/a%20b.jpg@webp";
    let (status, headers, body) = get(&proxy.url(&format!("{path}?query=ignored"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, body_for(path));
    assert_eq!(headers["content-type"], "image/jpeg");
    proxy.shutdown().await;

    let (stored, content_type, cache_control) = s3.object(&key(path)).await.expect("stored");
    assert_eq!(stored, body);
    assert_eq!(content_type, "image/jpeg");
    assert_eq!(cache_control.as_deref(), Some("max-age=3600, public"));
    assert_eq!(s3.keys().await, vec![key(path)]);
}
