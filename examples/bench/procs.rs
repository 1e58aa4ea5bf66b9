//! The processes under test: the proxy binary and nginx, each started on its own loopback
//! port and stopped at the end of a measurement.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::load;

/// A free loopback port (the listener is closed again; the port is reused at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `url` until it answers 200: start-up, not a measurement.
pub async fn wait_ready(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while load::status(url).await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{url} did not come up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Proxy {
    child: Child,
    pub port: u16,
}

impl Proxy {
    /// Starts the proxy binary with a clean environment plus `env`.
    pub async fn start(bin: &Path, env: &[(&str, String)]) -> Proxy {
        let port = free_port();
        let child = Command::new(bin)
            .env_clear()
            .env("IMGPROXY_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env("HOME", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let proxy = Proxy { child, port };
        wait_ready(
            &proxy.url("/_imgproxy-cache/health"),
            Duration::from_secs(30),
        )
        .await;
        proxy
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The proxy's process id.
    #[allow(dead_code, reason = "the soak's; the benchmark does not use it")]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// CPU seconds (user + system) the proxy has used so far, upload thread included.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// SIGTERM, then waits: the proxy drains its uploads before it exits.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The bundled worker (`imgproxy-cache worker`), serving `local://` sources from a folder.
pub struct Worker {
    child: Child,
    pub port: u16,
}

impl Worker {
    pub async fn start(bin: &Path, sources: &Path) -> Worker {
        let port = free_port();
        let child = Command::new(bin)
            .arg("worker")
            .env_clear()
            .env("IMGPROXY_BIND", format!("127.0.0.1:{port}"))
            .env("IMGPROXY_LOCAL_FILESYSTEM_ROOT", sources)
            // 24 MP photos: above imgproxy's default limit of 16.8 MP.
            .env("IMGPROXY_MAX_SRC_RESOLUTION", "50")
            .env("RUST_LOG", "warn")
            .env("HOME", "/nonexistent")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} worker: {e}", bin.display()));
        let worker = Worker { child, port };
        wait_ready(&worker.url("/health"), Duration::from_secs(30)).await;
        worker
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    /// The cache directory on tmpfs, for [`Flavour::Cache`].
    _cache: Option<tempfile::TempDir>,
}

/// How nginx is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `proxy_pass` as the first benchmark ran it: keep-alive upstream connections, two
    /// workers, and nginx's default buffers (`proxy_buffers 8 4k`), so a 50 KB body does not
    /// fit and the rest of it goes to a temp file.
    DefaultBuffers,
    /// `proxy_pass` as a careful operator sets it for image results: see [`TUNED`].
    Tuned,
    /// [`Flavour::Tuned`] plus `proxy_cache` on tmpfs with `proxy_cache_lock on`: see [`CACHE`].
    Cache,
}

impl Flavour {
    pub fn label(self) -> &'static str {
        match self {
            Flavour::DefaultBuffers => "nginx proxy_pass, default buffers",
            Flavour::Tuned => "nginx proxy_pass, tuned",
            Flavour::Cache => "nginx proxy_cache, tuned",
        }
    }
}

/// What a careful operator sets for 50 KB–1 MB results, beyond keep-alive upstream connections
/// and a worker per core: buffers that hold a whole result (`proxy_buffers`, so no body goes to
/// a temp file, and `proxy_max_temp_file_size 0` in case one is larger), client and upstream
/// connections kept for good (`keepalive_requests` is 1 000 by default: wrk's connections
/// would be closed and reopened every 1 000 requests, ours never are), `reuseport` (the kernel
/// spreads connections over the workers), `sendfile` and `tcp_nopush`.
pub const TUNED: &str = "proxy_buffer_size 16k; proxy_buffers 16 16k; proxy_busy_buffers_size 64k; \
proxy_max_temp_file_size 0; keepalive_requests 1000000 (client and upstream); \
listen reuseport; sendfile on; tcp_nopush on";

/// The cache on top of [`TUNED`]: on tmpfs, one lock per key, a year's validity (the upstream
/// says a year too), the cache files' descriptors kept open.
pub const CACHE: &str = "proxy_cache_path on /dev/shm (use_temp_path=off); proxy_cache_lock on; \
proxy_cache_valid 200 1y; open_file_cache max=10000";

impl Nginx {
    /// nginx in front of `upstream`, configured as `flavour` says; `worker_processes` is the
    /// number of cores (2).
    pub async fn start(upstream: std::net::SocketAddr, flavour: Flavour) -> Nginx {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let cache = (flavour == Flavour::Cache)
            .then(|| tempfile::tempdir_in("/dev/shm").expect("a cache directory on tmpfs"));
        let (http, upstream_extra, listen, location) = match flavour {
            Flavour::DefaultBuffers => (String::new(), "", "", String::new()),
            Flavour::Tuned | Flavour::Cache => {
                let mut http = "  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n\
                    proxy_buffer_size 16k;\n  proxy_buffers 16 16k;\n  proxy_busy_buffers_size 64k;\n\
                    proxy_max_temp_file_size 0;\n"
                    .to_owned();
                let mut location = String::new();
                if let Some(cache) = &cache {
                    http += &format!(
                        "  proxy_cache_path {} levels=1:2 keys_zone=bench:16m max_size=2g \
                         inactive=1y use_temp_path=off;\n  \
                         open_file_cache max=10000 inactive=1h;\n",
                        cache.path().display()
                    );
                    location = "      proxy_cache bench;\n      proxy_cache_lock on;\n      \
                        proxy_cache_valid 200 1y;\n      add_header X-Cache $upstream_cache_status;\n"
                        .to_owned();
                }
                (http, " keepalive_requests 1000000;", " reuseport", location)
            }
        };
        let conf = format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n{http}\
               upstream up {{ server {upstream}; keepalive 128;{upstream_extra} }}\n\
               server {{\n    listen 127.0.0.1:{port}{listen};\n    location / {{\n      proxy_pass http://up;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{location}    }}\n  }}\n}}\n",
        );
        let conf_path: PathBuf = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx (scripts/bench installs it)");
        let nginx = Nginx {
            child,
            port,
            _dir: dir,
            _cache: cache,
        };
        wait_ready(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(10),
        )
        .await;
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// CPU seconds nginx has used so far: the master and its workers.
    pub fn cpu_secs(&self) -> f64 {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        cpu_secs(master)
            + children
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(cpu_secs)
                .sum::<f64>()
    }
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat` (0 if it is gone).
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds from a `stat` file of `/proc` (a process's or a thread's).
pub fn stat_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let ticks: f64 = rest
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_sec
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}
