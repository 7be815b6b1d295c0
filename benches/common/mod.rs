//! What the benchmarks share: percentiles, the report line, and a process's resident memory.

#![allow(dead_code)]

use std::time::Duration;

/// The sample at `fraction` (0.5 for the median) of the sorted samples.
pub fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * fraction).round() as usize]
}

/// Prints one line: the count, p50 and p99 in milliseconds.
pub fn report(name: &str, samples: &mut [Duration]) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!("{name:<36} n={:<6} p50={:>9.3} ms  p99={:>9.3} ms", samples.len(), ms(p50), ms(p99));
}

/// A duration in milliseconds.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The resident memory of a process, in MiB (NaN when it cannot be read).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
