//! A process's resident memory, read from `/proc`. Standard library only: the simulator's
//! benchmarks (`tests/kube-sim/benches`) include this file too.

/// The resident memory of a process, in MiB (NaN when it cannot be read).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
