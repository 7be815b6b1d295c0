//! What the benchmarks share: percentiles, the report line, and a process's resident memory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hydroplane::proto;

mod memory;
// Not every benchmark reads memory.
#[allow(unused_imports)]
pub use memory::rss_mib;

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

/// A Start of nginx with one port (on Kubernetes, a Pod and a ClusterIP Service) in `group`.
pub fn nginx(name: &str, group: &str) -> proto::StartRequest {
    proto::StartRequest {
        spec: Some(proto::ProcessSpec {
            process_name: name.to_owned(),
            group: Some(group.to_owned()),
            container: Some(proto::ContainerSpec {
                image_uri: "nginx".to_owned(),
                ports: vec![proto::PortMapping {
                    container_port: 80,
                    protocol: "tcp".to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        wait: false,
        wait_timeout: None,
    }
}

/// A Start of a process that sleeps for an hour, in the group `bench`.
pub fn sleeper(name: &str) -> proto::StartRequest {
    proto::StartRequest {
        spec: Some(proto::ProcessSpec {
            process_name: name.to_owned(),
            group: Some("bench".to_owned()),
            container: Some(proto::ContainerSpec {
                image_uri: "busybox".to_owned(),
                command: vec!["sleep".to_owned(), "3600".to_owned()],
                ..Default::default()
            }),
            has_public_ip: false,
            ..Default::default()
        }),
        wait: false,
        wait_timeout: None,
    }
}

/// Starts the release server on a free loopback port with these arguments; returns it and the
/// address it announced.
pub fn start_server(args: &[&str]) -> Result<(Server, String), Box<dyn std::error::Error>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    // From here on the server is stopped however the benchmark ends, an error included.
    let stdout = child.stdout.take();
    let server = Server(child);
    let mut first_line = String::new();
    BufReader::new(stdout.ok_or("no stdout")?).read_line(&mut first_line)?;
    let address = first_line.split_whitespace().nth(3).ok_or("no address line")?.to_owned();
    Ok((server, address))
}

/// A running server, stopped with SIGTERM (which stops its processes too) when dropped.
pub struct Server(Child);

impl Server {
    /// The server's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// Stops a server with SIGTERM and waits for it.
pub fn stop_server(server: Server) {
    drop(server);
}

/// The value of `--name N` among the arguments, or `default`.
pub fn argument(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// How many processes one listing shows, its pages followed (a page holds at most 1,000
/// processes unless the request asks for other sizes), over any client stack.
pub async fn count_listed<S>(
    client: &mut hydroplane::proto::process_service_client::ProcessServiceClient<S>,
) -> Result<usize, tonic::Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::transport::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut request = proto::ListRequest::default();
    let mut count = 0;
    loop {
        let page = client.list(request.clone()).await?.into_inner();
        count += page.processes.len();
        match page.next_page_token {
            Some(token) => request.page_token = Some(token),
            None => return Ok(count),
        }
    }
}

/// Starts `processes` sleepers, then times `calls` Lists of them (after a warm-up), over any
/// client stack (plain, TLS, with a token).
pub async fn time_lists<S>(
    client: &mut hydroplane::proto::process_service_client::ProcessServiceClient<S>,
    processes: usize,
    calls: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::transport::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    for index in 0..processes {
        client.start(sleeper(&format!("p{index:03}"))).await?;
    }
    // Warm up the connection and the caches before timing.
    for _ in 0..100 {
        count_listed(client).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let begin = std::time::Instant::now();
        let listed = count_listed(client).await?;
        samples.push(begin.elapsed());
        assert_eq!(listed, processes, "List sees every process");
    }
    Ok(samples)
}

/// The CPU time (user + system) a process has used so far, from `/proc/PID/stat` (zero when
/// it cannot be read).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
    // utime and stime are the 14th and 15th fields: the 12th and 13th after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<u64>().ok()).sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

/// The CPU time a process's threads have run so far, to the nanosecond, from each live
/// thread's `/proc/PID/task/TID/schedstat` (threads that have exited are not counted: use it
/// for servers whose threads stay). `/proc/PID/stat` counts in 10 ms ticks, too coarse to
/// compare two calls of tens of microseconds.
pub fn run_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let nanos: u64 = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// The kernel's clock ticks per second for `/proc` CPU times (`getconf CLK_TCK`; 100 when
/// that cannot be run, which is what Linux uses on every architecture we run on).
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A child process killed (and reaped) when dropped, also when the benchmark fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release `kube-sim` binary beside the server's, built first when it is missing.
pub fn kube_sim_binary() -> std::path::PathBuf {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_hydroplane")).with_file_name("kube-sim");
    if !binary.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "kube-sim", "--bin", "kube-sim"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building kube-sim failed");
    }
    binary
}

/// Starts the release kube-sim on a free loopback port with these extra arguments, writing its
/// kubeconfig to `kubeconfig`; returns it once it listens.
pub fn start_kube_sim(
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> Result<KillOnDrop, Box<dyn std::error::Error>> {
    let mut child = Command::new(kube_sim_binary())
        // The simulator's allocator keeps the memory it frees instead of returning it to the
        // system every few milliseconds: on the two cores it shares with the server, those
        // bursts of work otherwise show up in the server's latencies.
        .env("MIMALLOC_PURGE_DELAY", "-1")
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(kubeconfig)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take();
    let sim = KillOnDrop(child);
    let mut reader = BufReader::new(stdout.ok_or("no stdout")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Keep reading, so that the simulator never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Ok(sim)
}

/// Starts the release server with the settings file `config` on a free loopback port; returns
/// it and its `http://` URL.
pub fn start_server_with_config(
    config: &std::path::Path,
) -> Result<(KillOnDrop, String), Box<dyn std::error::Error>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0", "-c"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take();
    let server = KillOnDrop(child);
    let mut reader = BufReader::new(stdout.ok_or("no stdout")?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    std::thread::spawn(move || for _ in reader.lines() {});
    let address = line.split_whitespace().nth(3).ok_or("no address line")?.to_owned();
    Ok((server, format!("http://{address}")))
}
