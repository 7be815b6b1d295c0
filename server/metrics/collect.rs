//! What a scrape reads from `/proc/self` instead of counters kept up to date: the server's own
//! memory, CPU, open files and start time ([`ProcessCollector`], the standard `process_*`
//! names). Reading at scrape time costs nothing between scrapes and cannot drift from the truth.
//! Collectors of other modules' state (the runtime's, [`crate::runtime::collect`]) are
//! registered by whoever owns both, with [`super::Metrics::register_collector`].

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The standard `process_*` metrics of the server itself, from `/proc/self`; on a system
/// without it, none.
#[derive(Debug)]
pub struct ProcessCollector;

/// Clock ticks per second in `/proc/*/stat`: `USER_HZ`, fixed at 100 in the Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says of the server.
#[derive(Debug, Default, PartialEq)]
struct ProcessSample {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    start_time_seconds: Option<f64>,
}

/// The CPU seconds (user + system) and the start, in ticks after boot, from `/proc/self/stat`.
fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    // The command name may hold spaces and parentheses: fields are counted after the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3 of the man page, so field N is at index N - 3.
    let ticks = |field: usize| fields.get(field - 3).and_then(|value| value.parse::<f64>().ok());
    Some((ticks(14)? / TICKS_PER_SECOND + ticks(15)? / TICKS_PER_SECOND, ticks(22)?))
}

/// A `Name:   1234 kB` line of `/proc/self/status`, in bytes.
fn status_kib(status: &str, name: &str) -> Option<f64> {
    let line = status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?;
    let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024.0)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The boot time, in seconds since the epoch, from `/proc/stat`.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

fn sample() -> Option<ProcessSample> {
    let (cpu_seconds, start_ticks) = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|entries| entries.count() as f64).unwrap_or(0.0);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(max_open_files);
    let start_time_seconds = std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(boot_time)
        .map(|boot| boot + start_ticks / TICKS_PER_SECOND);
    Some(ProcessSample {
        cpu_seconds,
        resident_bytes: status_kib(&status, "VmRSS").unwrap_or(0.0),
        virtual_bytes: status_kib(&status, "VmSize").unwrap_or(0.0),
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(sample) = sample() else { return Ok(()) };
        let cpu = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(sample.cpu_seconds).encode(cpu)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", Some(sample.resident_bytes)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", Some(sample.virtual_bytes)),
            ("process_open_fds", "Number of open file descriptors", Some(sample.open_fds)),
            ("process_max_fds", "Maximum number of open file descriptors", sample.max_fds),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(gauge)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_even_with_odd_command_names() {
        // 52 fields, as Linux writes them; utime 250, stime 50, starttime 1000 ticks.
        let mut fields = vec!["0"; 49];
        fields[14 - 3] = "250";
        fields[15 - 3] = "50";
        fields[22 - 3] = "1000";
        let stat = format!("42 (a (b) c) {}", fields.join(" "));
        assert_eq!(parse_stat(&stat), Some((3.0, 1000.0)));
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS"), Some(2048.0 * 1024.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 4096                 files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1_700_000_000.0));
        let sampled = sample().expect("this test runs on Linux");
        assert!(sampled.resident_bytes > 0.0 && sampled.open_fds > 0.0, "{sampled:?}");
    }
}
