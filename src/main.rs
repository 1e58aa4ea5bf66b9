//! The `imgproxy-cache` command: parse the command line and the environment, set up logging,
//! bind, and hand over to the library.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use imgproxy_cache::cache::open_store;
use imgproxy_cache::config::{Config, SETTINGS, StorageConfig};
use imgproxy_cache::proxy::{self, upstream::Upstream};
use imgproxy_cache::telemetry;
use imgproxy_cache::worker;

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
    Worker,
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
    let matches = Cli::command()
        .after_help(settings_help())
        .mut_subcommand("proxy", |c| c.after_help(settings_help()))
        .mut_subcommand("worker", |c| c.after_help(worker_settings_help()))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command.unwrap_or(Command::Proxy) {
        Command::Proxy => run_proxy(),
        Command::Worker => run_worker(),
    }
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime can always be built at start-up");
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let why = match &config.storage {
        StorageConfig::Local { .. } => " (S3_BUCKET is not set)",
        StorageConfig::S3(_) => "",
    };
    let store = match open_store(&config).await {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the local store in CACHE_DIR");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "imgproxy-cache starting; results go to {}{why}",
        store.describe()
    );
    let listener = match TcpListener::bind(&config.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, bind = %config.bind, "cannot listen on IMGPROXY_BIND");
            return ExitCode::FAILURE;
        }
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
    tracing::info!(bind = %config.bind, upstream = %config.upstream, "ready");
    let report = proxy::run(listener, config, store, shutdown_signal()).await;
    if report.abandoned > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

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

fn run_worker() -> ExitCode {
    let config = match worker::config::WorkerConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("imgproxy-cache worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime can always be built at start-up");
    runtime.block_on(async {
        let listener = match TcpListener::bind(&config.bind).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, bind = %config.bind, "cannot listen on IMGPROXY_BIND");
                return ExitCode::FAILURE;
            }
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

/// Resolves on SIGTERM (container stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail at start-up");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
