//! Issue 13's benchmark: the server on the `kubernetes` runtime with 150,000 processes on the
//! Kubernetes API simulator. In this order: the server's RSS with no process; Start throughput
//! at 64 callers for the first 10,000 processes and the server CPU per Start; on to 140,000;
//! the throughput of the last 10,000 against a second server and simulator that hold 5,000 to
//! 15,000 processes, in turns of 2,000 Starts (the cores' speed drifts over a run by more than
//! the 10% compared, so the two are read side by side); RSS per process; the full paged List (every process
//! exactly once); the List of one group of 100 (latency, and server CPU per call against the
//! same List on three servers holding only those 100, in 40 rounds of turns of 1,000 calls, net
//! of a control List of an empty group on the same servers, with its 95% interval); server
//! CPU per watch event; and 1,000 Watch
//! streams while 10,000 processes change (every watcher gets every change, and the delay from
//! the pod write to the event).
//!
//! Run with `cargo bench --bench kube_scale` (`-- --processes N --callers C --watchers W` to
//! change the sizes, e.g. `-- --processes 20000 --watchers 100` while iterating;
//! `--changes N` and `--change-rate R` set the watch phase's pod changes and their pace). Each
//! result is one line `name  value unit (target ...)`. CPU is utime + stime of the server's pid.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use common::{
    KillOnDrop, argument, cpu_time, ms, percentile, rss_mib, run_time, start_kube_sim,
    start_server_with_config,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hydroplane::proto::{self, process_service_client::ProcessServiceClient};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use tonic::transport::Channel;

/// The group of the 100 processes listed on their own.
const SMALL_GROUP: &str = "small";
/// How many processes form that group.
const SMALL_GROUP_SIZE: usize = 100;
/// A group with no process, listed for the control of the group List's CPU.
const EMPTY_GROUP: &str = "nobody";
/// How many servers holding only the group of 100 its List is compared with: identical servers
/// differ by up to about 2.5% in CPU per call (by where their code and data happen to lie), a
/// bias one reference would carry whole into the ratio.
const REFERENCES: usize = 3;
/// The batch whose Start throughput is compared at the beginning and the end.
const BATCH: usize = 10_000;
/// The Starts of one turn when the last batch is compared with the reference server.
const ROUND: usize = 2_000;
/// The largest gRPC message the benchmark accepts: a server that does not page yet answers a
/// List of everything in one message.
const MAX_MESSAGE: usize = 512 << 20;

/// Prints one result line: name, value, unit and the target it is held to.
fn result(name: &str, value: f64, unit: &str, target: &str) {
    println!("{name:<44} {value:>12.3} {unit:<12} ({target})");
}

/// The name of the `index`th process.
fn process_name(index: usize) -> String {
    format!("p{index:06}")
}

/// The restart policy every Start asks for (`--restart-policy`); unset: the server's default.
static RESTART_POLICY: std::sync::OnceLock<proto::RestartPolicy> = std::sync::OnceLock::new();

/// Reads `--restart-policy always|on_failure|never`.
fn restart_policy(args: &[String]) -> Result<proto::RestartPolicy, String> {
    let Some(position) = args.iter().position(|arg| arg == "--restart-policy") else {
        return Ok(proto::RestartPolicy::Unspecified);
    };
    match args.get(position + 1).map(String::as_str) {
        Some("always") => Ok(proto::RestartPolicy::Always),
        Some("on_failure") => Ok(proto::RestartPolicy::OnFailure),
        Some("never") => Ok(proto::RestartPolicy::Never),
        other => Err(format!("--restart-policy takes always, on_failure or never, not {other:?}")),
    }
}

/// A Start of the `index`th process: nginx with one port (so a Pod and a ClusterIP Service);
/// the first 100 are the group `small`, the rest `bench`.
fn start_request(index: usize) -> proto::StartRequest {
    let group = if index < SMALL_GROUP_SIZE { SMALL_GROUP } else { "bench" };
    let mut request = common::nginx(&process_name(index), group);
    if let Some(spec) = request.spec.as_mut() {
        spec.set_restart_policy(RESTART_POLICY.get().copied().unwrap_or_default());
    }
    request
}

/// The name of each process's current Pod, by process index: a bare Pod is named as its
/// process, a StatefulSet's Pod `NAME-0`, a Job's `NAME-xxxxx`.
async fn pod_names(pods: &kube::Api<Pod>, count: usize) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut names = vec![String::new(); count];
    let mut params = ListParams::default().labels("hydroplane/process-id").limit(5_000);
    loop {
        let page = pods.list_metadata(&params).await?;
        for pod in &page.items {
            let process = pod.metadata.labels.as_ref().and_then(|labels| labels.get("hydroplane/process-id"));
            let index = process.and_then(|name| name.strip_prefix('p')).and_then(|n| n.parse::<usize>().ok());
            if let (Some(index), Some(name)) = (index, pod.metadata.name.as_ref())
                && index < count
            {
                names[index].clone_from(name);
            }
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    if let Some(missing) = names.iter().position(String::is_empty) {
        return Err(format!("process {} has no Pod", process_name(missing)).into());
    }
    Ok(names)
}

/// Starts processes `range` with `callers` concurrent callers; returns the elapsed time.
async fn start_range(
    client: &ProcessServiceClient<Channel>,
    range: std::ops::Range<usize>,
    callers: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (mut client, next, end) = (client.clone(), Arc::clone(&next), range.end);
        tasks.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<(), tonic::Status>(());
                }
                client.start(start_request(index)).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(begin.elapsed())
}

/// What the Starts of one server took over its turns: time, Starts, and the CPU of its server
/// and simulator while they ran.
#[derive(Default)]
struct Turn {
    elapsed: Duration,
    starts: usize,
    server_cpu: Duration,
    simulator_cpu: Duration,
}

impl Turn {
    fn add(&mut self, other: Turn) {
        self.elapsed += other.elapsed;
        self.starts += other.starts;
        self.server_cpu += other.server_cpu;
        self.simulator_cpu += other.simulator_cpu;
    }

    fn rate(&self) -> f64 {
        self.starts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn server_per_start(&self) -> Duration {
        self.server_cpu / self.starts.max(1) as u32
    }

    fn simulator_per_start(&self) -> Duration {
        self.simulator_cpu / self.starts.max(1) as u32
    }
}

/// One turn: Starts `range` on one server, with its server's and simulator's CPU (`pids`).
async fn start_turn(
    client: &ProcessServiceClient<Channel>,
    range: std::ops::Range<usize>,
    callers: usize,
    (server, simulator): (u32, u32),
) -> Result<Turn, Box<dyn std::error::Error>> {
    // A turn is a fraction of a second: 10 ms ticks are too coarse for it.
    let (server_before, simulator_before) = (run_time(server), run_time(simulator));
    let starts = range.len();
    let elapsed = start_range(client, range, callers).await?;
    Ok(Turn {
        elapsed,
        starts,
        server_cpu: run_time(server) - server_before,
        simulator_cpu: run_time(simulator) - simulator_before,
    })
}

/// A kube-rs client of the simulator's `default` namespace pods.
async fn pods_api(kubeconfig: &Path) -> Result<kube::Api<Pod>, Box<dyn std::error::Error>> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    Ok(kube::Api::namespaced(kube::Client::try_from(config)?, "default"))
}

/// Waits until the simulated kubelet has started every pod, polling a one-item list (the
/// simulator has no event for "all started"), then until the server shows the last process
/// RUNNING, so that the server has taken in every change.
async fn wait_until_running(
    pods: &kube::Api<Pod>,
    client: &mut ProcessServiceClient<Channel>,
    last: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(900);
    while !pods
        .list_metadata(&ListParams::default().fields("status.phase=Pending").limit(1))
        .await?
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "pods still Pending after 15 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut watch = client
        .watch(proto::WatchRequest { process_name: Some(process_name(last)), ..Default::default() })
        .await?
        .into_inner();
    while let Some(event) = watch.message().await? {
        if event.process.is_some_and(|p| p.status() == proto::ProcessStatus::Running) {
            return Ok(());
        }
    }
    Err("the watch ended before the last process ran".into())
}

/// The outcome of a full paged List.
struct FullList {
    elapsed: Duration,
    pages: usize,
    names: usize,
    duplicates: usize,
    revisions: HashSet<u64>,
    first_page: usize,
}

/// Lists every process in pages of `page_size`, counting names and duplicates.
async fn full_list(
    client: &mut ProcessServiceClient<Channel>,
    page_size: u32,
) -> Result<FullList, Box<dyn std::error::Error>> {
    let begin = Instant::now();
    let mut names = HashSet::new();
    let (mut duplicates, mut pages, mut first_page) = (0, 0, 0);
    let mut revisions = HashSet::new();
    let mut token = None;
    loop {
        let page = client
            .list(proto::ListRequest { page_size, page_token: token.take(), ..Default::default() })
            .await?
            .into_inner();
        if pages == 0 {
            first_page = page.processes.len();
        }
        pages += 1;
        revisions.insert(page.revision);
        for process in page.processes {
            if !names.insert(process.process_name) {
                duplicates += 1;
            }
        }
        match page.next_page_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => break,
        }
    }
    Ok(FullList { elapsed: begin.elapsed(), pages, names: names.len(), duplicates, revisions, first_page })
}

/// Lists `group` once, checking that all of its `size` processes are listed.
async fn list_group(
    client: &mut ProcessServiceClient<Channel>,
    group: &str,
    size: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let request = proto::ListRequest { group: Some(group.into()), ..Default::default() };
    let listed = client.list(request).await?.into_inner().processes.len();
    assert_eq!(listed, size, "the List of group {group} sees the whole group");
    Ok(())
}

/// Times `calls` Lists of the small group, after a warm-up; returns the latencies.
async fn group_list_latencies(
    client: &mut ProcessServiceClient<Channel>,
    calls: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    for _ in 0..100 {
        list_group(client, SMALL_GROUP, SMALL_GROUP_SIZE).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let call = Instant::now();
        list_group(client, SMALL_GROUP, SMALL_GROUP_SIZE).await?;
        samples.push(call.elapsed());
    }
    Ok(samples)
}

/// One series of the List CPU comparison: a server (its client and pid) asked for a group of
/// a known size.
struct ListSeries {
    /// A clone of a client: it shares the client's connection.
    client: ProcessServiceClient<Channel>,
    pid: u32,
    group: &'static str,
    size: usize,
}

/// Server CPU of each series, measured in turns of `calls` Lists, `rounds` turns per series,
/// so that all are read under the same conditions on the shared cores. The order of the turns
/// changes from round to round as the rows of a Williams square: over every `series.len()`
/// rounds (an even number), each series takes each place once and follows each other series
/// once, since a turn costs more or less by where it falls (a plain rotation biased the ratios
/// by 6 to 11%). CPU is the servers' thread run time, to the nanosecond, read after the first
/// `warm_up` calls of a turn too. Returns each round's CPU of each series: `[round][series]`.
async fn list_cpu(
    series: &mut [ListSeries],
    rounds: usize,
    calls: usize,
    warm_up: usize,
) -> Result<Vec<Vec<TurnCpu>>, Box<dyn std::error::Error>> {
    let count = series.len();
    // The first row: 0, 1, n-1, 2, n-2, ...; row r adds r to each.
    let first: Vec<usize> = (0..count)
        .map(|place| if place % 2 == 1 { place.div_ceil(2) } else { (count - place / 2) % count })
        .collect();
    let mut spent = Vec::with_capacity(rounds);
    for number in 0..rounds {
        let mut round = vec![TurnCpu::default(); count];
        for place in &first {
            let index = (place + number) % count;
            let one = &mut series[index];
            let before = run_time(one.pid);
            for _ in 0..warm_up {
                list_group(&mut one.client, one.group, one.size).await?;
            }
            let warm = run_time(one.pid);
            for _ in warm_up..calls {
                list_group(&mut one.client, one.group, one.size).await?;
            }
            round[index] = TurnCpu { first: warm - before, rest: run_time(one.pid) - warm };
        }
        spent.push(round);
    }
    Ok(spent)
}

/// A server's CPU in one turn of the List CPU comparison, in two parts.
#[derive(Clone, Copy, Default)]
struct TurnCpu {
    /// Over the turn's first calls, when the server warms up again after the others' turns.
    first: Duration,
    /// Over the rest of the turn.
    rest: Duration,
}

impl TurnCpu {
    /// Over the whole turn.
    fn whole(&self) -> Duration {
        self.first + self.rest
    }
}

/// The geometric mean of `ratios` and its 95% interval (from the mean and standard error of
/// their logarithms): where a ratio of CPU lies, given the rounds' scatter.
fn ratio_interval(ratios: &[f64]) -> (f64, f64, f64) {
    let logs: Vec<f64> = ratios.iter().map(|ratio| ratio.ln()).collect();
    let count = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / count;
    let variance = logs.iter().map(|log| (log - mean).powi(2)).sum::<f64>() / (count - 1.0).max(1.0);
    let error = 1.96 * (variance / count).sqrt();
    (mean.exp(), (mean - error).exp(), (mean + error).exp())
}

/// A pod status that the server reads as a crash-looping process whose message carries `text`;
/// `name` is its container's, the process's name.
fn crashing_status(name: &str, restarts: u32, text: &str) -> serde_json::Value {
    serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{"name": name, "image": "nginx",
        "imageID": "", "ready": false, "restartCount": restarts,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": text}}}]}})
}

/// The `changes` processes to change, spread over all `count`.
fn changed_process(change: usize, changes: usize, count: usize) -> usize {
    change * count / changes
}

/// Changes `changes` pods' status through the simulator (no Start involved), with `in_flight`
/// writes at once, at most `rate` per second (0: as fast as they go). Each message is
/// `{tag} {change} {microseconds since origin}`, so watchers can tell which change it is and
/// when it was written.
async fn change_pods(
    pods: &kube::Api<Pod>,
    pod_names: &[String],
    changes: usize,
    restarts: u32,
    tag: &str,
    rate: f64,
    origin: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let begin = Instant::now();
    futures::stream::iter(0..changes)
        .map(|change| {
            let pods = pods.clone();
            let tag = tag.to_owned();
            async move {
                if rate > 0.0 {
                    tokio::time::sleep_until((begin + Duration::from_secs_f64(change as f64 / rate)).into())
                        .await;
                }
                let process = changed_process(change, changes, pod_names.len());
                let name = &pod_names[process];
                let text = format!("{tag} {change} {}", origin.elapsed().as_micros());
                pods.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(crashing_status(&process_name(process), restarts, &text)),
                )
                .await
            }
        })
        .buffer_unordered(64)
        .for_each(|outcome| {
            outcome.expect("patch a pod's status");
            async {}
        })
        .await;
    Ok(())
}

/// What one watcher saw.
#[derive(Default)]
struct Seen {
    /// Which changes arrived, by number.
    changes: Vec<bool>,
    /// How many arrived (counting each once).
    distinct: usize,
    /// Microseconds from each pod write to its event.
    delays: Vec<u32>,
    /// Whether the stream said RESET (the watcher stops there).
    reset: bool,
}

/// The part of a `WatchEvent` the watchers read: its type and its process's message. prost
/// skips the other fields, so the benchmark's client, which shares the two cores with the
/// server and reads ten million events, builds no strings it does not look at.
#[derive(Clone, PartialEq, prost::Message)]
struct WatchedEvent {
    /// `WatchEvent.type`.
    #[prost(enumeration = "proto::WatchEventType", tag = "1")]
    r#type: i32,
    /// `WatchEvent.process`.
    #[prost(message, optional, tag = "2")]
    process: Option<WatchedProcess>,
}

/// The part of a `ProcessInfo` the watchers read.
#[derive(Clone, PartialEq, prost::Message)]
struct WatchedProcess {
    /// `ProcessInfo.message`.
    #[prost(string, optional, tag = "7")]
    message: Option<String>,
}

/// Opens a Watch stream that reads [`WatchedEvent`]s.
async fn watch_slim(
    channel: Channel,
    request: proto::WatchRequest,
) -> Result<tonic::Streaming<WatchedEvent>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec = tonic_prost::ProstCodec::<proto::WatchRequest, WatchedEvent>::default();
    let path = http::uri::PathAndQuery::from_static("/hydroplane.v1.ProcessService/Watch");
    Ok(grpc.server_streaming(tonic::Request::new(request), path, codec).await?.into_inner())
}

/// Reads one Watch stream until it has seen every change of `tag`, a RESET, or `stop`.
async fn watcher(
    channel: Channel,
    since_revision: u64,
    tag: String,
    changes: usize,
    origin: Instant,
    done: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Seen, tonic::Status> {
    let mut seen =
        Seen { changes: vec![false; changes], delays: Vec::with_capacity(changes), ..Default::default() };
    let request = proto::WatchRequest { since_revision: Some(since_revision), ..Default::default() };
    let mut stream = watch_slim(channel, request).await?;
    // One wait for the stop, polled after the stream: a new one per event would register and
    // drop a waiter each time.
    let mut stopped = std::pin::pin!(stop.wait_for(|stop| *stop));
    loop {
        let event = tokio::select! {
            biased;
            event = stream.message() => event?,
            _ = &mut stopped => break,
        };
        let Some(event) = event else { break };
        if event.r#type() == proto::WatchEventType::Reset {
            seen.reset = true;
            break;
        }
        let Some(message) = event.process.and_then(|p| p.message) else { continue };
        let mut words = message.split(' ');
        if words.next() != Some(tag.as_str()) {
            continue;
        }
        let (Some(change), Some(written)) = (
            words.next().and_then(|w| w.parse::<usize>().ok()),
            words.next().and_then(|w| w.parse::<u128>().ok()),
        ) else {
            continue;
        };
        if change < changes && !seen.changes[change] {
            seen.changes[change] = true;
            seen.distinct += 1;
            let delay = origin.elapsed().as_micros().saturating_sub(written);
            seen.delays.push(u32::try_from(delay).unwrap_or(u32::MAX));
            if seen.distinct == changes {
                break;
            }
        }
    }
    done.fetch_add(1, Ordering::Relaxed);
    Ok(seen)
}

/// The revision the server's table is at, from the SYNCED event of a one-process watch.
async fn current_revision(
    client: &mut ProcessServiceClient<Channel>,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut watch = client
        .watch(proto::WatchRequest { process_name: Some(process_name(0)), ..Default::default() })
        .await?
        .into_inner();
    while let Some(event) = watch.message().await? {
        if event.r#type() == proto::WatchEventType::Synced {
            return Ok(event.revision);
        }
    }
    Err("the watch ended before SYNCED".into())
}

/// Writes the server's settings for the simulator's kubeconfig: the Kubernetes client's rate
/// limit off when this server has that setting (checked with `hydroplane check`), and limits
/// wide enough for the benchmark's callers and watchers.
fn write_settings(
    directory: &Path,
    kubeconfig: &Path,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let config = directory.join("hydroplane.yml");
    let limits =
        "limits:\n  max_concurrent_calls: 100000\n  max_watches_per_token: 100000\n  max_watches: 100000\n";
    let base = format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n", kubeconfig.display());
    std::fs::write(&config, format!("{base}  api_qps: 0\n{limits}"))?;
    let accepted = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["check", "-c"])
        .arg(&config)
        .output()?
        .status
        .success();
    if !accepted {
        static NOTED: std::sync::Once = std::sync::Once::new();
        NOTED.call_once(|| {
            println!("note: this server has no runtime.api_qps; its Kubernetes client keeps its default rate")
        });
        std::fs::write(&config, format!("{base}{limits}"))?;
    }
    Ok(config)
}

/// A simulator and a server on it, each stopped when dropped: the server first (fields drop
/// in order), so that it does not log the simulator going away.
struct Stack {
    server: KillOnDrop,
    sim: KillOnDrop,
    url: String,
    kubeconfig: std::path::PathBuf,
    _directory: tempfile::TempDir,
}

/// A server (and simulator) holding only the group of 100: a reference for its List's CPU.
struct Reference {
    stack: Stack,
    /// The connection that carried the Starts, kept open as the large server's is.
    _starts: ProcessServiceClient<Channel>,
    /// A connection of its own for the Lists.
    lists: ProcessServiceClient<Channel>,
}

/// Starts a reference server and its 100 processes, and waits until they run.
async fn start_reference(callers: usize) -> Result<Reference, Box<dyn std::error::Error>> {
    let stack = start_stack()?;
    let mut starts = connect(&stack.url).await?;
    start_range(&starts, 0..SMALL_GROUP_SIZE, callers.min(SMALL_GROUP_SIZE)).await?;
    let pods = pods_api(&stack.kubeconfig).await?;
    wait_until_running(&pods, &mut starts, SMALL_GROUP_SIZE - 1).await?;
    let lists = connect(&stack.url).await?;
    Ok(Reference { stack, _starts: starts, lists })
}

/// Starts kube-sim and the server on it.
fn start_stack() -> Result<Stack, Box<dyn std::error::Error>> {
    let directory = tempfile::tempdir()?;
    let kubeconfig = directory.path().join("kubeconfig");
    let sim = start_kube_sim(&kubeconfig, &["--pod-start-delay-ms", "100"])?;
    let config = write_settings(directory.path(), &kubeconfig)?;
    let (server, url) = start_server_with_config(&config)?;
    Ok(Stack { server, sim, url, kubeconfig, _directory: directory })
}

/// A connection of its own to the server at `url`.
async fn channel(url: &str) -> Result<Channel, Box<dyn std::error::Error>> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?.connect().await?)
}

async fn connect(url: &str) -> Result<ProcessServiceClient<Channel>, Box<dyn std::error::Error>> {
    Ok(ProcessServiceClient::new(channel(url).await?).max_decoding_message_size(MAX_MESSAGE))
}

// One client thread, as the server has one: on the 2 cores the server, the simulator and this
// client share, a multi-threaded client spends several times the CPU per Watch message (each
// message wakes its connection's task and is handled alone), which the server's latency then
// pays for.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count = argument(&args, "--processes", 150_000).max(2 * SMALL_GROUP_SIZE);
    let callers = argument(&args, "--callers", 64);
    let watchers = argument(&args, "--watchers", 1_000);
    let changes = argument(&args, "--changes", 10_000).min(count);
    let change_rate = argument(&args, "--change-rate", 200) as f64;
    let batch = BATCH.min(count / 3);
    let policy = restart_policy(&args)?;
    RESTART_POLICY.set(policy).expect("the restart policy is set once");

    let stack = start_stack()?;
    let server_pid = stack.server.0.id();
    let sim_pid = stack.sim.0.id();
    let mut client = connect(&stack.url).await?;
    let pods = pods_api(&stack.kubeconfig).await?;
    println!(
        "kubernetes runtime on kube-sim: {count} processes (restart policy {policy:?}: its objects and a ClusterIP Service each), {callers} callers, {watchers} watchers, gRPC on loopback"
    );

    // RSS with no process, once the server has synced and served a call.
    client.list(proto::ListRequest::default()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_empty = rss_mib(server_pid);
    result("server RSS, 0 processes", rss_empty, "MiB", "baseline");

    // The first batch: throughput, then CPU per Start once the server has taken in every change
    // those Starts cause (the Pod and Service events, the Pod running).
    let cpu_before = cpu_time(server_pid);
    let sim_before = cpu_time(sim_pid);
    let first = start_range(&client, 0..batch, callers).await?;
    // The simulator's CPU while the Starts ran: the wait below polls it with lists that scan
    // every pod, which is the benchmark's cost, not the Starts'.
    let sim_first = (cpu_time(sim_pid) - sim_before) / batch as u32;
    let first_rate = batch as f64 / first.as_secs_f64();
    result(&format!("Start throughput, first {batch}"), first_rate, "starts/s", "information");
    wait_until_running(&pods, &mut client, batch - 1).await?;
    let per_start = (cpu_time(server_pid) - cpu_before) / batch as u32;
    result("server CPU per Start", ms(per_start), "ms", "<= 0.15 ms");
    result("  simulator CPU per Start, first batch", ms(sim_first), "ms", "information: same 2 cores");

    let last_start = count - batch;
    let middle = start_range(&client, batch..last_start, callers).await?;
    result(
        &format!("Start throughput, {batch}..{last_start}"),
        (last_start - batch) as f64 / middle.as_secs_f64(),
        "starts/s",
        "information",
    );
    // The last batch against a reference server holding about the first batch's number, in
    // turns of ROUND Starts each: the two are read under the same conditions on the shared
    // cores (whose speed drifts over a run by more than the 10% compared).
    let reference = start_stack()?;
    let reference_client = connect(&reference.url).await?;
    let reference_pids = (reference.server.0.id(), reference.sim.0.id());
    let reference_from = batch / 2;
    start_range(&reference_client, 0..reference_from, callers).await?;
    let (mut reference_turns, mut last_turns) = (Turn::default(), Turn::default());
    for round in 0..batch.div_ceil(ROUND) {
        let offset = round * ROUND;
        let size = ROUND.min(batch - offset);
        let range = reference_from + offset..reference_from + offset + size;
        reference_turns.add(start_turn(&reference_client, range, callers, reference_pids).await?);
        let range = last_start + offset..last_start + offset + size;
        last_turns.add(start_turn(&client, range, callers, (server_pid, sim_pid)).await?);
    }
    drop(reference_client);
    drop(reference);
    let (reference_rate, last_rate) = (reference_turns.rate(), last_turns.rate());
    result(
        &format!("Start throughput, {reference_from}..{} (reference server)", reference_from + batch),
        reference_rate,
        "starts/s",
        "reference, in turns with the last",
    );
    result(&format!("Start throughput, last {batch}"), last_rate, "starts/s", "within 10% of the reference");
    result("  last / reference", last_rate / reference_rate, "ratio", ">= 0.90");
    result(
        "  server CPU per Start, last batch",
        ms(last_turns.server_per_start()),
        "ms",
        &format!("information; reference server {:.3} ms", ms(reference_turns.server_per_start())),
    );
    result(
        "  simulator CPU per Start, last batch",
        ms(last_turns.simulator_per_start()),
        "ms",
        &format!("information; reference {:.3} ms; same 2 cores", ms(reference_turns.simulator_per_start())),
    );
    wait_until_running(&pods, &mut client, count - 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_full = rss_mib(server_pid);
    result(&format!("server RSS, {count} processes"), rss_full, "MiB", "information");
    result("server RSS per process", (rss_full - rss_empty) * 1024.0 / count as f64, "KiB", "<= 2 KiB");

    for page_size in [1000u32, 5000] {
        let mut times = Vec::new();
        let mut listing = full_list(&mut client, page_size).await?;
        for _ in 0..4 {
            times.push(listing.elapsed);
            listing = full_list(&mut client, page_size).await?;
        }
        times.push(listing.elapsed);
        let exactly_once = listing.names == count && listing.duplicates == 0;
        result(
            &format!("full List, page_size {page_size}, p50"),
            ms(percentile(&mut times, 0.5)),
            "ms",
            "printed; every process exactly once",
        );
        println!(
            "  {} pages, {} distinct of {count}, {} duplicates, {} revision(s): {}",
            listing.pages,
            listing.names,
            listing.duplicates,
            listing.revisions.len(),
            if exactly_once { "every process exactly once" } else { "NOT every process exactly once" }
        );
        if listing.pages == 1 && listing.first_page > page_size as usize {
            println!(
                "  note: the server does not page yet (one response of {} processes, no next_page_token)",
                listing.first_page
            );
        }
    }

    // The fair comparison for the group List: the same request, answering the same 100
    // processes, from servers that hold nothing else, read in turns with this one. Each
    // server is asked on a connection of its own, opened for this: the server's side of the
    // connection that carried the Starts (64 at once) cost about 1.5% more per List after them.
    let mut references = Vec::with_capacity(REFERENCES);
    for _ in 0..REFERENCES {
        references.push(start_reference(callers).await?);
    }
    let mut group_client = connect(&stack.url).await?;
    let mut samples = group_list_latencies(&mut group_client, 1_000).await?;
    let mut small_samples = group_list_latencies(&mut references[0].lists, 1_000).await?;
    result("List of a group of 100, p50", ms(percentile(&mut samples, 0.5)), "ms", "information");
    result("List of a group of 100, p99", ms(percentile(&mut samples, 0.99)), "ms", "<= 1 ms");
    result(
        "List of 100 alone (100-process server), p99",
        ms(percentile(&mut small_samples, 0.99)),
        "ms",
        "reference",
    );
    // The control: a List of a group with no process, on the same connections and in the same
    // rounds, costs each server its fixed cost of a call; the larger process pays more for any
    // call, whatever it answers, and the group's answer is judged net of that.
    let servers: Vec<(ProcessServiceClient<Channel>, u32)> =
        std::iter::once((group_client.clone(), server_pid))
            .chain(
                references.iter().map(|reference| (reference.lists.clone(), reference.stack.server.0.id())),
            )
            .collect();
    let mut series: Vec<ListSeries> = [(SMALL_GROUP, SMALL_GROUP_SIZE), (EMPTY_GROUP, 0)]
        .into_iter()
        .flat_map(|(group, size)| {
            servers.iter().map(move |(client, pid)| ListSeries {
                client: client.clone(),
                pid: *pid,
                group,
                size,
            })
        })
        .collect();
    // Long turns: a server that waited while the others ran pays to warm up again when its
    // turn begins, the larger one more (with turns of 100 calls the control read 1.03 to 1.06).
    let calls = 1_000;
    // The first calls of each turn are read apart, to tell warming up from the steady cost.
    let warm_up = 100;
    let spent = list_cpu(&mut series, 40, calls, warm_up).await?;
    // Series 0 and 1 + REFERENCES are the large server's, each followed by the references'.
    let per_call: Vec<f64> = (0..series.len())
        .map(|index| {
            let total: f64 = spent.iter().map(|round| round[index].whole().as_secs_f64()).sum();
            total / (spent.len() * calls) as f64 * 1e6
        })
        .collect();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let references_of = |large: usize| large + 1..large + 1 + REFERENCES;
    let ratios_of = |large: usize, part: fn(&TurnCpu) -> Duration| -> Vec<f64> {
        spent
            .iter()
            .map(|round| {
                let seconds: Vec<f64> = round.iter().map(|turn| part(turn).as_secs_f64()).collect();
                seconds[large] / mean(&seconds[references_of(large)]).max(1e-12)
            })
            .collect()
    };
    let (group, control) = (0, 1 + REFERENCES);
    let (group_ratios, control_ratios) =
        (ratios_of(group, TurnCpu::whole), ratios_of(control, TurnCpu::whole));
    let (large_group, small_group) = (per_call[group], mean(&per_call[references_of(group)]));
    result(&format!("  server CPU per call, {count}-process server"), large_group, "us", "information");
    result(
        &format!("  server CPU per call, {REFERENCES} 100-process servers"),
        small_group,
        "us",
        "reference",
    );
    let each: Vec<String> =
        per_call[references_of(group)].iter().map(|one| format!("{:.3}", one / small_group)).collect();
    println!(
        "  each 100-process server against their mean: {} (what identical servers differ by)",
        each.join(", ")
    );
    result("group-of-100 CPU / alone CPU", large_group / small_group, "ratio", "<= 1.0");
    let verdict = |low: f64| if low <= 1.0 { "no more than alone" } else { "MORE: all of it above 1.0" };
    let (_, low, high) = ratio_interval(&group_ratios);
    println!(
        "  95% interval {low:.3} to {high:.3} over {} rounds of {calls} calls: {}",
        spent.len(),
        verdict(low)
    );
    let (large_control, small_control) = (per_call[control], mean(&per_call[references_of(control)]));
    let (_, control_low, control_high) = ratio_interval(&control_ratios);
    println!(
        "  control, a List of an empty group: {large_control:.3} against {small_control:.3} us per call, ratio {:.3} ({control_low:.3} to {control_high:.3})",
        large_control / small_control
    );
    let net: Vec<f64> =
        group_ratios.iter().zip(&control_ratios).map(|(group, control)| group / control).collect();
    let (mean, net_low, net_high) = ratio_interval(&net);
    println!("  net of the control: {mean:.3} ({net_low:.3} to {net_high:.3}): {}", verdict(net_low));
    let (rest, rest_low, rest_high) = ratio_interval(&ratios_of(group, |turn| turn.rest));
    let (control_rest, control_rest_low, control_rest_high) =
        ratio_interval(&ratios_of(control, |turn| turn.rest));
    println!(
        "  without the first {warm_up} calls of each turn: {rest:.3} ({rest_low:.3} to {rest_high:.3}), control {control_rest:.3} ({control_rest_low:.3} to {control_rest_high:.3})"
    );
    drop((series, servers, group_client));
    drop(references);

    // CPU per watch event: pods change through the simulator only; the server takes in each
    // change from its Kubernetes watch. A one-process watch tells when the last one is in.
    // Read to the nanosecond: 10,000 events take about 0.1 s of CPU, ten of `/proc`'s ticks.
    let origin = Instant::now();
    let event_changes = changes;
    let pod_names = pod_names(&pods, count).await?;
    let cpu_before = run_time(server_pid);
    change_pods(&pods, &pod_names, event_changes, 1, "cpu", 0.0, origin).await?;
    let marker = process_name(0);
    let mut marker_watch = client
        .watch(proto::WatchRequest { process_name: Some(marker.clone()), ..Default::default() })
        .await?
        .into_inner();
    let marker_pod = &pod_names[0];
    pods.patch_status(
        marker_pod,
        &PatchParams::default(),
        &Patch::Merge(crashing_status(&marker, 2, "marker")),
    )
    .await?;
    while let Some(event) = marker_watch.message().await? {
        if event.process.is_some_and(|p| p.message.as_deref() == Some("marker")) {
            break;
        }
    }
    drop(marker_watch);
    let per_event = (run_time(server_pid) - cpu_before) / (event_changes + 1) as u32;
    result("server CPU per watch event", ms(per_event) * 1000.0, "us", "<= 20 us");

    // Watchers on a few shared HTTP/2 connections, from the table's current revision (a
    // snapshot of every process per watcher is not what this measures).
    let connections = watchers.div_ceil(125).max(1);
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(channel(&stack.url).await?);
    }
    let since = current_revision(&mut client).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for index in 0..watchers {
        tasks.push(tokio::spawn(watcher(
            channels[index % connections].clone(),
            since,
            "watch".into(),
            changes,
            origin,
            Arc::clone(&done),
            stop.clone(),
        )));
    }
    let cpu_before = cpu_time(server_pid);
    let client_cpu_before = cpu_time(std::process::id());
    let began = Instant::now();
    change_pods(&pods, &pod_names, changes, 3, "watch", change_rate, origin).await?;
    let sent = began.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_sender.send(true);
    let watch_cpu = cpu_time(server_pid) - cpu_before;
    let client_cpu = cpu_time(std::process::id()) - client_cpu_before;
    let (mut complete, mut resets, mut failed) = (0, 0, 0);
    let mut delays: Vec<u32> = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(seen) => {
                if seen.distinct == changes {
                    complete += 1;
                } else if seen.reset {
                    resets += 1;
                }
                delays.extend(seen.delays);
            }
            Err(status) => {
                failed += 1;
                eprintln!("a watcher failed: {status}");
            }
        }
    }
    println!(
        "  {changes} changes at {:.0}/s in {:.1} s; {watchers} watchers on {connections} connections: {complete} got every change, {resets} RESET, {} incomplete, {failed} failed",
        changes as f64 / sent.as_secs_f64(),
        sent.as_secs_f64(),
        watchers - complete - resets - failed
    );
    result(
        "watchers with every event (or RESET)",
        (complete + resets) as f64,
        "watchers",
        &format!("= {watchers}"),
    );
    result(
        "  server CPU per event delivered",
        ms(watch_cpu) * 1000.0 / delays.len().max(1) as f64,
        "us",
        "information",
    );
    result(
        "  benchmark client CPU per event read",
        ms(client_cpu) * 1000.0 / delays.len().max(1) as f64,
        "us",
        "information: same 2 cores",
    );
    if !delays.is_empty() {
        let p = |fraction: f64, delays: &mut Vec<u32>| {
            let index = ((delays.len() as f64 - 1.0) * fraction).round() as usize;
            f64::from(*delays.select_nth_unstable(index).1) / 1000.0
        };
        result("pod change -> Watch event, p50", p(0.5, &mut delays), "ms", "information");
        result("pod change -> Watch event, p99", p(0.99, &mut delays), "ms", "<= 5 ms");
    }
    drop(channels);
    drop(client);
    drop(stack);

    Ok(())
}
