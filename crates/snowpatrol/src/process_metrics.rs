//! Process metrics under Prometheus's standard names (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...) and `snowpatrol_build_info`.
//!
//! Written here rather than taken from a crate: `prometheus-client` has no process collector, and the ones
//! that exist belong to the other Prometheus crate (`prometheus`) or pull in all of `procfs`; what is needed is
//! two small files under `/proc/self` read at scrape time. On systems without `/proc` the family is empty.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug)]
struct ProcessCollector;

/// Registers the process collector and the build info.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
    registry.sub_registry_with_prefix("snowpatrol").register(
        "build",
        "The running Snowpatrol version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
}

/// (cpu seconds, start time in seconds since boot, threads, virtual bytes, resident pages) from
/// `/proc/self/stat`.
fn stat() -> Option<(f64, f64, i64, f64, f64)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may contain spaces: fields are counted after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime 14 -> 11, stime 15 -> 12, threads 20 -> 17,
    // starttime 22 -> 19, vsize 23 -> 20, rss 24 -> 21.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions and only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = if ticks > 0.0 { ticks } else { 100.0 };
    Some((
        (num(11)? + num(12)?) / ticks,
        num(19)? / ticks,
        num(17)? as i64,
        num(20)?,
        num(21)?,
    ))
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((cpu, start_ticks, threads, vsize, rss_pages)) = stat() else {
            return Ok(());
        };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
        let counter = ConstCounter::new(cpu);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss_pages * page,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            vsize,
        )?;
        gauge("process_threads", "Number of OS threads", threads as f64)?;
        if let Some(boot) = boot_time() {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                boot + start_ticks,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                n as f64,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                n,
            )?;
        }
        Ok(())
    }
}
