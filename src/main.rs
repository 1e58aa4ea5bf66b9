//! The `imgproxy-cache` command: parse the command line and the environment, set up logging,
//! bind, and hand over to the library.

#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use imgproxy_cache::cache::config::StorageConfig;
use imgproxy_cache::cache::open_store;
use imgproxy_cache::cache::variant::Negotiation;
use imgproxy_cache::proxy::config::{Config, SETTINGS};
use imgproxy_cache::proxy::{self, upstream::Upstream};
use imgproxy_cache::settings::FromVars;
#[cfg(feature = "worker")]
use imgproxy_cache::worker;
use imgproxy_cache::{telemetry, url_builder};

/// A cache-on-write proxy for imgproxy: streams every result to the client and stores each
/// successful one in S3-compatible storage under the MD5 of its path.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the caching proxy in front of imgproxy (the default). Settings come from the
    /// environment; see the list below.
    Proxy,
    /// Run the bundled imgproxy-compatible worker. Settings are imgproxy's `IMGPROXY_*`
    /// variables; see the list below.
    #[cfg(feature = "worker")]
    Worker,
    /// Print the signed imgproxy URL of an image and its cached (bucket) URL, and, when the
    /// upstream negotiates formats (UPSTREAM_NEGOTIATION or IMGPROXY_AUTO_*/ENFORCE_*, as the
    /// proxy reads them), the cached URL of each variant a browser may load instead.
    Url(Box<UrlArgs>),
}

#[derive(clap::Args)]
struct UrlArgs {
    /// The source image URL.
    source: String,
    /// Processing options as in an imgproxy URL, e.g. `rs:fit:300:300/q:80`.
    #[arg(long, default_value = "")]
    options: String,
    /// Output format extension (`webp`, `avif`, `jpg`, ...).
    #[arg(long)]
    ext: Option<String>,
    /// Encode the source as base64url instead of `plain/`.
    #[arg(long)]
    base64: bool,
    /// Print one JSON object: path, proxy_url, cached_url, key, variants.
    #[arg(long)]
    json: bool,
    /// Hex key; a comma list signs with its first entry. Unset: `insecure`.
    #[arg(long, env = "IMGPROXY_KEY", default_value = "", hide_env_values = true)]
    key: String,
    /// Hex salt, paired with the key.
    #[arg(
        long,
        env = "IMGPROXY_SALT",
        default_value = "",
        hide_env_values = true
    )]
    salt: String,
    /// Bytes of the HMAC kept in the signature (1-32).
    #[arg(long, env = "IMGPROXY_SIGNATURE_SIZE", default_value_t = 32)]
    signature_size: usize,
    /// Key prefix, as the proxy's S3_FOLDER.
    #[arg(long, env = "S3_FOLDER", default_value = "")]
    prefix: String,
    /// Where the proxy is reached.
    #[arg(long, env = "PROXY_BASE_URL", default_value = url_builder::DEFAULT_PROXY_BASE_URL)]
    proxy_base_url: String,
    /// Where stored objects are reached: public bucket URL or CDN, up to the key.
    #[arg(long, env = "CACHE_BASE_URL")]
    cache_base_url: Option<String>,
}

fn settings_help() -> String {
    let mut text = String::from("Environment (variable, default, meaning):\n");
    for s in SETTINGS {
        text.push_str(&format!(
            "  {:<28} {:<28} {}\n",
            s.name, s.default, s.meaning
        ));
    }
    text
}

fn main() -> ExitCode {
    let command = Cli::command()
        .after_help(settings_help())
        .mut_subcommand("proxy", |c| c.after_help(settings_help()));
    #[cfg(feature = "worker")]
    let command = command.mut_subcommand("worker", |c| c.after_help(worker_settings_help()));
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command.unwrap_or(Command::Proxy) {
        Command::Proxy => run_proxy(),
        #[cfg(feature = "worker")]
        Command::Worker => run_worker(),
        Command::Url(args) => print_url(args),
    }
}

fn print_url(args: Box<UrlArgs>) -> ExitCode {
    let args = *args;
    let request = url_builder::UrlRequest {
        source: args.source,
        options: args.options,
        ext: args.ext,
        base64: args.base64,
    };
    let negotiation = match Negotiation::from_env() {
        Ok(negotiation) => negotiation,
        Err(e) => {
            eprintln!("imgproxy-cache url: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = url_builder::UrlSettings {
        negotiation,
        key: args.key,
        salt: args.salt,
        signature_size: args.signature_size,
        prefix: args.prefix,
        proxy_base_url: args.proxy_base_url,
        cache_base_url: args.cache_base_url,
    };
    let built = match url_builder::build(&request, &settings) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("imgproxy-cache url: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&built).expect("plain strings always serialize")
        );
    } else {
        println!("path:       {}", built.path);
        println!("proxy_url:  {}", built.proxy_url);
        match &built.cached_url {
            Some(url) => println!("cached_url: {url}"),
            None => println!("cached_url: (set CACHE_BASE_URL)"),
        }
        println!("key:        {}", built.key);
        for variant in &built.variants {
            let url = variant.cached_url.as_deref().unwrap_or(&variant.key);
            println!("variant:    {} {url}", variant.mime);
        }
    }
    ExitCode::SUCCESS
}

/// The multi-thread runtime both servers run on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime can always be built at start-up")
}

fn run_proxy() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("imgproxy-cache: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = runtime();
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let why = match &config.storage {
        StorageConfig::Local(_) => " (S3_BUCKET is not set)",
        StorageConfig::S3(..) => "",
    };
    let store = match open_store(&config.storage, config.upload.timeout).await {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the directory in CACHE_DIR");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "imgproxy-cache starting; results go to {}{why}",
        store.describe()
    );
    let listener = match listen(&config.bind).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let upstream = Upstream::new(config.upstream.clone(), config.upstream_timeout);
    if let Err(e) = upstream.wait_healthy(config.health_check_timeout).await {
        tracing::error!(
            error = %e,
            "the upstream {} did not become healthy within {:?} (HEALTH_CHECK_TIMEOUT_IN_SEC)",
            config.upstream,
            config.health_check_timeout,
        );
        return ExitCode::FAILURE;
    }
    // The address actually bound: with port 0 in IMGPROXY_BIND, the one the system chose.
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.bind.clone(), |a| a.to_string());
    tracing::info!(%addr, upstream = %config.upstream, "ready");
    let report = proxy::run(listener, config, store, shutdown_signal()).await;
    if report.abandoned > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(feature = "worker")]
fn worker_settings_help() -> String {
    let mut text = String::from("Environment (variable, default, imgproxy-compatible, meaning):\n");
    for s in worker::config::SETTINGS {
        text.push_str(&format!(
            "  {:<42} {:<26} {:<8} {}\n",
            s.name,
            s.default,
            s.compat.as_str(),
            s.meaning
        ));
    }
    text
}

#[cfg(feature = "worker")]
fn run_worker() -> ExitCode {
    let config = match worker::config::WorkerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("imgproxy-cache worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = runtime();
    runtime.block_on(async {
        let listener = match listen(&config.bind).await {
            Ok(listener) => listener,
            Err(code) => return code,
        };
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            bind = %config.bind,
            concurrency = config.server.concurrency,
            "imgproxy-cache worker ready"
        );
        worker::server::run(listener, config, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Binds `IMGPROXY_BIND` (both servers read it), or says why not and how the process ends.
async fn listen(bind: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(bind).await.map_err(|e| {
        tracing::error!(error = %e, %bind, "cannot listen on IMGPROXY_BIND");
        ExitCode::FAILURE
    })
}

/// Resolves on SIGTERM (container stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail at start-up");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
