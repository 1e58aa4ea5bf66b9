//! Once a second: the proxy's resident memory, open file descriptors and upload backlog, and
//! whether the bucket was down.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The span whose median is compared, after warm-up and at the end.
pub const WINDOW_SECS: u64 = 10;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub secs: f64,
    pub rss_kib: u64,
    /// The anonymous part of it (heap and stacks, no mapped files).
    pub anon_kib: u64,
    pub threads: u64,
    pub fds: usize,
    /// From the proxy's metrics: results waiting in the spool, stored so far, bytes held by
    /// the memory tier and the upload queue, bytes charged to the disk tier and its objects.
    pub spooled: u64,
    pub stored: u64,
    pub memory_bytes: u64,
    pub queue_bytes: u64,
    pub disk_bytes: u64,
    pub disk_entries: u64,
    pub bucket_down: bool,
}

pub struct Sampling {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampling {
    pub async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(());
        self.task.await.expect("the sampler does not panic")
    }
}

pub fn start(pid: u32, metrics_url: String, down: Arc<AtomicBool>, started: Instant) -> Sampling {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return samples,
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let metrics = crate::load::body(&metrics_url).await.unwrap_or_default();
            samples.push(Sample {
                secs: started.elapsed().as_secs_f64(),
                rss_kib: field(&status, "VmRSS:"),
                anon_kib: field(&status, "RssAnon:"),
                threads: field(&status, "Threads:"),
                fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
                spooled: series(&metrics, "imgproxy_cache_upload_spool_files"),
                stored: series(&metrics, "imgproxy_cache_uploads_total{outcome=\"stored\"}"),
                memory_bytes: series(&metrics, "imgproxy_cache_memory_bytes"),
                queue_bytes: series(&metrics, "imgproxy_cache_upload_queue_bytes"),
                disk_bytes: series(&metrics, "imgproxy_cache_disk_bytes"),
                disk_entries: series(&metrics, "imgproxy_cache_disk_entries"),
                bucket_down: down.load(Ordering::SeqCst),
            });
        }
    });
    Sampling { stop, task }
}

/// A number from `/proc/PID/status` (kB fields in KiB).
fn field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One series' value in a Prometheus text exposition (0 when it is not there yet).
fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Seconds of warm-up before the first window: a minute, or a fifth of a shorter run.
pub fn warm_up(run_secs: u64) -> u64 {
    (run_secs / 5).min(60)
}

/// The median of `value` over the window after warm-up, and over the last window.
pub fn flatness(samples: &[Sample], warm_up: u64, value: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let median = |window: Vec<f64>| {
        let mut window = window;
        window.sort_by(f64::total_cmp);
        window.get(window.len() / 2).copied().unwrap_or(0.0)
    };
    let from = warm_up as f64;
    let after_warm_up = samples
        .iter()
        .filter(|s| s.secs >= from && s.secs < from + WINDOW_SECS as f64)
        .map(&value)
        .collect();
    let end = samples.len().saturating_sub(WINDOW_SECS as usize);
    let last = samples[end..].iter().map(&value).collect();
    (median(after_warm_up), median(last))
}

pub fn write_csv(path: &Path, samples: &[Sample]) {
    let mut csv = String::from(
        "secs,rss_mib,anon_mib,threads,fds,spooled,stored,memory_mib,queue_mib,disk_mib,\
         disk_entries,bucket_down\n",
    );
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    for s in samples {
        csv.push_str(&format!(
            "{:.1},{:.1},{:.1},{},{},{},{},{:.1},{:.1},{:.1},{},{}\n",
            s.secs,
            s.rss_kib as f64 / 1024.0,
            s.anon_kib as f64 / 1024.0,
            s.threads,
            s.fds,
            s.spooled,
            s.stored,
            mib(s.memory_bytes),
            mib(s.queue_bytes),
            mib(s.disk_bytes),
            s.disk_entries,
            u8::from(s.bucket_down)
        ));
    }
    std::fs::write(path, csv).expect("write soak.csv");
}

/// Resident memory and descriptors over time, the bucket's outages shaded, via gnuplot.
pub fn chart(out: &Path, samples: &[Sample]) {
    let data = out.join("soak.dat");
    let mut rows = String::from("# secs rss_mib fds bucket_down\n");
    for s in samples {
        rows.push_str(&format!(
            "{:.1} {:.1} {} {}\n",
            s.secs,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            u8::from(s.bucket_down)
        ));
    }
    std::fs::write(&data, rows).expect("write the chart data");
    let top = samples
        .iter()
        .map(|s| s.rss_kib as f64 / 1024.0)
        .fold(1.0, f64::max)
        * 1.2;
    let script = format!(
        "set terminal pngcairo size 800,400\nset output '{png}'\n\
         set title 'Soak: proxy resident memory and open descriptors (bucket down: shaded)'\n\
         set xlabel 'seconds'\nset ylabel 'MiB'\nset y2label 'descriptors'\n\
         set yrange [0:{top:.0}]\nset y2range [0:*]\nset ytics nomirror\nset y2tics\nset grid ytics\n\
         set key bottom right\nset style fill transparent solid 0.15 noborder\n\
         plot '{dat}' using 1:($4 * {top:.0}) with filledcurves y1=0 lc rgb 'red' title 'bucket down', \
         '' using 1:2 with lines lw 2 title 'resident memory (MiB)', \
         '' using 1:3 axes x1y2 with lines lw 1 title 'open descriptors'\n",
        png = out.join("soak.png").display(),
        dat = data.display()
    );
    let script_path = out.join("soak.gp");
    std::fs::write(&script_path, script).expect("write the gnuplot script");
    let drawn = std::process::Command::new("gnuplot")
        .arg(&script_path)
        .status()
        .is_ok_and(|s| s.success());
    if !drawn {
        eprintln!("gnuplot failed or is missing: no chart drawn");
    }
    let _ = std::fs::remove_file(&data);
    let _ = std::fs::remove_file(&script_path);
}
