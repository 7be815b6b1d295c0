//! Logs on the local runtime, end to end: the real server with a temporary `log_dir`, driven
//! through the generated client. What a process wrote comes back exactly (text or binary, whole
//! or filtered), followers see new lines at once and end when the process does, hundreds of
//! followers share one process, a process writing as fast as it can costs bounded memory and
//! disk, and the files go when the process does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hydroplane::proto::process_service_client::ProcessServiceClient;
use hydroplane::proto::{self, LogStream, ProcessStatus};
use serde_json::{Value, json};
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::requests::{start_request, stop_process};
use crate::common::watch::{Watch, status_name};
use crate::common::{Server, eventually, test_python};

/// How long any one Logs call may take before the test fails.
const LOGS_TIMEOUT: Duration = Duration::from_secs(60);

/// A server on the local runtime keeping output under `scratch/logs`, with more settings.
fn server(scratch: &TempDir, extra: &str) -> Server {
    let log_dir = scratch.path().join("logs");
    let yaml = format!("runtime:\n  runtime_type: local\n  log_dir: {}\n{extra}", log_dir.display());
    Server::start_with_config(scratch.path(), &yaml)
}

/// A process that runs a shell script.
fn shell(name: &str, script: &str) -> Value {
    json!({"process_name": name, "restart_policy": "never", "container": {"image_uri": "sh", "command": ["sh", "-c", script]}})
}

fn logs_request(name: &str) -> proto::LogsRequest {
    proto::LogsRequest { process_name: name.to_owned(), ..Default::default() }
}

/// Every chunk of a Logs call, which must end with OK.
async fn logs(
    client: &mut ProcessServiceClient<Channel>,
    request: proto::LogsRequest,
) -> Vec<proto::LogChunk> {
    let name = request.process_name.clone();
    tokio::time::timeout(LOGS_TIMEOUT, async {
        let mut stream = client.logs(request).await.expect("the Logs call is accepted").into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.message().await.expect("the stream ends with OK") {
            chunks.push(chunk);
        }
        chunks
    })
    .await
    .unwrap_or_else(|_| panic!("the Logs call of {name} did not end within {LOGS_TIMEOUT:?}"))
}

fn bytes_of(chunks: &[proto::LogChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|chunk| chunk.data.iter().copied()).collect()
}

fn text_of(chunks: &[proto::LogChunk]) -> String {
    String::from_utf8(bytes_of(chunks)).expect("text")
}

async fn wait_for_status(
    client: &mut ProcessServiceClient<Channel>,
    name: &str,
    status: ProcessStatus,
) -> proto::ProcessInfo {
    let mut watch = Watch::process(client, name).await;
    watch.until_process(name, status_name(status), |_, process| process.status() == status).await
}

/// The directories of this server's processes called `name` (one per run of that name).
fn process_directories(scratch: &TempDir, server: &Server, name: &str) -> Vec<PathBuf> {
    let run = scratch.path().join("logs").join(format!("run-{}", server.pid()));
    let Ok(entries) = std::fs::read_dir(run) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|file| file.to_str())
                .and_then(|file| file.rsplit_once('.'))
                .is_some_and(|(process, number)| process == name && number.parse::<u64>().is_ok())
        })
        .collect()
}

/// The bytes of a directory's files.
fn directory_bytes(directory: &Path) -> u64 {
    std::fs::read_dir(directory)
        .map(|entries| {
            entries.filter_map(Result::ok).filter_map(|entry| entry.metadata().ok()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// The resident memory of a process, in bytes.
fn resident_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("a number of kB");
    kib * 1024
}

fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as i128
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_process_keeps_its_ten_lines_and_its_history() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exit 3";
    client.start(start_request(shell("ten", script))).await.expect("start");
    wait_for_status(&mut client, "ten", ProcessStatus::Failed).await;

    let chunks = logs(&mut client, logs_request("ten")).await;
    let expected: String = (1..=10).map(|index| format!("line {index}\n")).collect();
    assert_eq!(text_of(&chunks), expected);
    assert!(chunks.iter().all(|chunk| chunk.stream() == LogStream::Stdout && chunk.timestamp.is_none()));
    let timed = logs(&mut client, proto::LogsRequest { timestamps: true, ..logs_request("ten") }).await;
    assert!(timed.iter().all(|chunk| chunk.timestamp.is_some()), "{timed:?}");

    let detail = client
        .describe(proto::DescribeRequest { process_name: "ten".to_owned() })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(detail.process.as_ref().and_then(|process| process.exit_code), Some(3));
    let statuses: Vec<&str> = detail.history.iter().map(|entry| status_name(entry.status())).collect();
    assert!(
        statuses == ["STARTING", "RUNNING", "FAILED"] || statuses == ["RUNNING", "FAILED"],
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_processes_and_previous_runs_of_processes_never_restarted_are_refused() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    let error = client.logs(logs_request("ghost")).await.expect_err("unknown");
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    client.start(start_request(shell("once", "echo hi; sleep 300"))).await.expect("start");
    let error = client
        .logs(proto::LogsRequest { previous: true, ..logs_request("once") })
        .await
        .expect_err("previous");
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("has not restarted"), "{}", error.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_reads_the_run_before_the_last_restart() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    // Each run says which it is, on both streams; the first two fail, the third stays.
    let counter = scratch.path().join("runs");
    let script = format!(
        "n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; \
         echo \"run $n\"; echo \"err $n\" >&2; echo \"end $n\"; \
         if [ $n -ge 3 ]; then sleep 300; fi; exit 1",
        counter = counter.display()
    );
    let mut spec = shell("again", &script);
    spec["restart_policy"] = json!("on_failure");
    client.start(start_request(spec)).await.expect("start");
    // The third run's output is a line with no event of its own: polled, with a deadline.
    let all = eventually("the third run's last line is in the logs", LOGS_TIMEOUT, async || {
        let all = text_of(&logs(&mut client, logs_request("again")).await);
        if all.contains("end 3") { Ok(all) } else { Err(all) }
    })
    .await;
    assert!(all.starts_with("run 1\n"), "every run kept without `previous`: {all}");
    let previous = proto::LogsRequest { previous: true, ..logs_request("again") };
    let both = text_of(&logs(&mut client, previous.clone()).await);
    let mut lines: Vec<&str> = both.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["end 2", "err 2", "run 2"], "the second run only: {both}");
    let stdout = proto::LogsRequest { stream: LogStream::Stdout as i32, ..previous.clone() };
    assert_eq!(text_of(&logs(&mut client, stdout.clone()).await), "run 2\nend 2\n");
    let tail = proto::LogsRequest { tail_lines: Some(1), ..stdout };
    assert_eq!(text_of(&logs(&mut client, tail).await), "end 2\n");
    // A follower of the previous run ends with it.
    let followed = proto::LogsRequest { follow: true, ..previous };
    assert!(text_of(&logs(&mut client, followed).await).contains("run 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_sees_each_new_line_within_100_ms() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    // Each line carries the time it was written, read just before the write.
    let script =
        "sleep 0.5; for i in $(seq 1 30); do echo \"tick $(date +%s%N)\"; sleep 0.05; done; sleep 300";
    client.start(start_request(shell("ticker", script))).await.expect("start");
    let follow = proto::LogsRequest { follow: true, ..logs_request("ticker") };
    let connected = now_nanos();
    let mut stream = client.logs(follow).await.expect("follow").into_inner();
    let mut latencies = Vec::new();
    let mut pending = String::new();
    tokio::time::timeout(LOGS_TIMEOUT, async {
        while latencies.len() < 30 {
            let chunk = stream.message().await.expect("a chunk").expect("the follower does not end");
            let received = now_nanos();
            pending.push_str(std::str::from_utf8(&chunk.data).expect("text"));
            while let Some((line, rest)) = pending.split_once('\n') {
                let written: i128 =
                    line.strip_prefix("tick ").and_then(|time| time.parse().ok()).expect(line);
                // Lines written before the follower connected measure nothing.
                latencies.push((written >= connected).then_some(received - written));
                pending = rest.to_owned();
            }
        }
    })
    .await
    .expect("30 lines within the timeout");
    let mut measured: Vec<i128> = latencies.into_iter().flatten().collect();
    assert!(measured.len() >= 20, "only {} lines were written after the follower connected", measured.len());
    measured.sort();
    let median = measured[measured.len() / 2];
    println!("follow latency: median {} µs, worst {} µs", median / 1000, measured[measured.len() - 1] / 1000);
    assert!(median < 100_000_000, "median latency {} ms", median / 1_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn tails_and_stream_filters_select_lines() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    // The pauses order the two streams' phases (within a phase, both pipes are read apart).
    let script = "for i in 1 2 3 4 5; do echo out $i; done; sleep 0.3; \
                  for i in 1 2 3 4 5; do echo err $i >&2; done; sleep 0.3; printf partial";
    client.start(start_request(shell("mixed", script))).await.expect("start");
    wait_for_status(&mut client, "mixed", ProcessStatus::Exited).await;
    let ask = |tail_lines: Option<u64>, stream: LogStream| proto::LogsRequest {
        tail_lines,
        stream: stream.into(),
        ..logs_request("mixed")
    };
    let check =
        async |client: &mut ProcessServiceClient<Channel>, request: proto::LogsRequest, expected: &str| {
            let chunks = logs(client, request.clone()).await;
            assert_eq!(text_of(&chunks), expected, "{request:?}");
            chunks
        };
    check(&mut client, ask(Some(3), LogStream::Unspecified), "err 4\nerr 5\npartial").await;
    check(
        &mut client,
        ask(Some(7), LogStream::Combined),
        "out 5\nerr 1\nerr 2\nerr 3\nerr 4\nerr 5\npartial",
    )
    .await;
    let stdout =
        check(&mut client, ask(None, LogStream::Stdout), "out 1\nout 2\nout 3\nout 4\nout 5\npartial").await;
    assert!(stdout.iter().all(|chunk| chunk.stream() == LogStream::Stdout));
    let stderr =
        check(&mut client, ask(None, LogStream::Stderr), "err 1\nerr 2\nerr 3\nerr 4\nerr 5\n").await;
    assert!(stderr.iter().all(|chunk| chunk.stream() == LogStream::Stderr));
    check(&mut client, ask(Some(2), LogStream::Stdout), "out 5\npartial").await;
    check(&mut client, ask(Some(1), LogStream::Stderr), "err 5\n").await;
    check(&mut client, ask(Some(0), LogStream::Unspecified), "").await;

    use proto::logs_request::Since;
    let since = |since| proto::LogsRequest { since: Some(since), ..logs_request("mixed") };
    let hour = Since::SinceDuration(prost_types::Duration { seconds: 3600, nanos: 0 });
    assert_eq!(text_of(&logs(&mut client, since(hour)).await).lines().count(), 11);
    let future = Since::SinceTime(prost_types::Timestamp { seconds: 4_000_000_000, nanos: 0 });
    check(&mut client, since(future), "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_output_comes_back_byte_for_byte() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    let python = test_python();
    let program = "import sys\nfor _ in range(4):\n    sys.stdout.buffer.write(bytes(range(256))); sys.stdout.flush()\n";
    let spec = json!({"process_name": "binary", "restart_policy": "never", "container": {"image_uri": "python", "command": [python, "-c", program]}});
    client.start(start_request(spec)).await.expect("start");
    wait_for_status(&mut client, "binary", ProcessStatus::Exited).await;
    let expected: Vec<u8> = (0..4).flat_map(|_| 0..=255u8).collect();
    assert_eq!(bytes_of(&logs(&mut client, logs_request("binary")).await), expected);
    let follow = proto::LogsRequest { follow: true, ..logs_request("binary") };
    assert_eq!(bytes_of(&logs(&mut client, follow).await), expected, "a follower of an ended process");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_writing_as_fast_as_it_can_costs_bounded_memory_and_disk() {
    const MAX_LOG_BYTES: u64 = 4 << 20;
    const VOLUME: u64 = 1_000_000_000;
    const RSS_BOUND: u64 = 64 << 20;
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, &format!("  max_log_bytes: {MAX_LOG_BYTES}\n"));
    let mut client = server.client().await;
    let rss_before = resident_bytes(server.pid());
    let script = format!(
        "sleep 0.2; yes 'numbered lines are at the end; this one is filler' | head -c {VOLUME}; \
         for i in $(seq 1 100); do echo \"final $i\"; done"
    );
    client.start(start_request(shell("flood", &script))).await.expect("start");
    // A follower that never reads, on a connection of its own (its unread data must not hold up
    // the test's other calls): it must not keep the server's memory growing.
    let mut idle_client = ProcessServiceClient::connect(server.url()).await.expect("connect");
    let idle =
        idle_client.logs(proto::LogsRequest { follow: true, ..logs_request("flood") }).await.expect("follow");

    let started = Instant::now();
    let (mut rss_peak, mut disk_peak) = (rss_before, 0);
    let mut watch = Watch::process(&mut client, "flood").await;
    let ended = tokio::spawn(async move {
        watch.until_process("flood", "EXITED", |_, process| process.status() == ProcessStatus::Exited).await
    });
    while !ended.is_finished() {
        rss_peak = rss_peak.max(resident_bytes(server.pid()));
        disk_peak = disk_peak.max(
            process_directories(&scratch, &server, "flood")
                .iter()
                .map(|directory| directory_bytes(directory))
                .sum(),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(started.elapsed() < Duration::from_secs(120), "the flood did not end");
    }
    ended.await.expect("watch");
    let elapsed = started.elapsed();
    println!(
        "{VOLUME} bytes in {elapsed:?}; server RSS {} MiB before, {} MiB at most; disk at most {disk_peak} bytes",
        rss_before >> 20,
        rss_peak >> 20
    );
    assert!(rss_peak - rss_before < RSS_BOUND, "RSS grew by {} MiB", (rss_peak - rss_before) >> 20);
    assert!(disk_peak > 0, "the output was written to disk");
    let record = 21 + 64 * 1024;
    assert!(disk_peak <= MAX_LOG_BYTES + record, "{disk_peak} bytes on disk");

    let tail = logs(&mut client, proto::LogsRequest { tail_lines: Some(2), ..logs_request("flood") }).await;
    assert_eq!(text_of(&tail), "final 99\nfinal 100\n");
    let all = bytes_of(&logs(&mut client, logs_request("flood")).await);
    assert!(all.ends_with(b"final 100\n"));
    assert!(all.len() as u64 >= MAX_LOG_BYTES / 2 - MAX_LOG_BYTES / 8, "only {} bytes kept", all.len());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_ends_with_ok_when_the_process_is_stopped_or_exits() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let mut client = server.client().await;
    client.start(start_request(shell("stopped", "echo hello; sleep 300"))).await.expect("start");
    let mut stream = client
        .logs(proto::LogsRequest { follow: true, ..logs_request("stopped") })
        .await
        .expect("follow")
        .into_inner();
    let first = tokio::time::timeout(LOGS_TIMEOUT, stream.message()).await.expect("in time").expect("ok");
    assert_eq!(first.map(|chunk| chunk.data.to_vec()), Some(b"hello\n".to_vec()));
    client.stop(stop_process("stopped")).await.expect("stop");
    let end = tokio::time::timeout(LOGS_TIMEOUT, stream.message()).await.expect("the follower ends");
    assert!(matches!(end, Ok(None)), "{end:?}");

    client.start(start_request(shell("exits", "echo a; sleep 0.3; echo b"))).await.expect("start");
    let chunks = logs(&mut client, proto::LogsRequest { follow: true, ..logs_request("exits") }).await;
    assert_eq!(text_of(&chunks), "a\nb\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_followers_each_receive_every_line() {
    const FOLLOWERS: usize = 200;
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = server(&scratch, "");
    let go = scratch.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; for i in $(seq 1 500); do echo line $i; done",
        go.display()
    );
    let mut client = server.client().await;
    client.start(start_request(shell("fanout", &script))).await.expect("start");
    // Four connections of fifty streams each, as several clients would.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(ProcessServiceClient::connect(server.url()).await.expect("connect"));
    }
    let mut followers = Vec::new();
    for index in 0..FOLLOWERS {
        let mut follower = channels[index % channels.len()].clone();
        let stream = follower
            .logs(proto::LogsRequest { follow: true, ..logs_request("fanout") })
            .await
            .expect("follow")
            .into_inner();
        followers.push(stream);
    }
    let mut idle_client = ProcessServiceClient::connect(server.url()).await.expect("connect");
    let idle = idle_client
        .logs(proto::LogsRequest { follow: true, ..logs_request("fanout") })
        .await
        .expect("follow");
    let rss_before = resident_bytes(server.pid());
    std::fs::write(&go, "").expect("write the go file");

    let readers: Vec<_> = followers
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut data = Vec::new();
                while let Some(chunk) = stream.message().await.expect("the stream ends with OK") {
                    data.extend_from_slice(&chunk.data);
                }
                data
            })
        })
        .collect();
    let expected: Vec<u8> = (1..=500).flat_map(|index| format!("line {index}\n").into_bytes()).collect();
    let received =
        tokio::time::timeout(LOGS_TIMEOUT, futures::future::join_all(readers)).await.expect("in time");
    for (index, data) in received.into_iter().enumerate() {
        assert_eq!(data.expect("a follower"), expected, "follower {index}");
    }
    let rss_after = resident_bytes(server.pid());
    assert!(rss_after < rss_before + (16 << 20), "RSS {} MiB -> {} MiB", rss_before >> 20, rss_after >> 20);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_removed_on_stop_and_on_shutdown() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut server = server(&scratch, "");
    let mut client = server.client().await;
    client.start(start_request(shell("brief", "echo kept until stopped; sleep 300"))).await.expect("start");
    client.start(start_request(shell("other", "echo other; sleep 300"))).await.expect("start");
    eventually("the output files exist", Duration::from_secs(10), async || {
        ["brief", "other"].iter().all(|name| {
            process_directories(&scratch, &server, name)
                .iter()
                .any(|directory| directory.join("output").exists())
        })
    })
    .await;
    client.stop(stop_process("brief")).await.expect("stop");
    assert!(process_directories(&scratch, &server, "brief").is_empty(), "removed when the Stop answers");

    // A name started again gets a new directory.
    client.start(start_request(shell("brief", "echo second run; sleep 300"))).await.expect("start");
    let second = logs(&mut client, proto::LogsRequest { tail_lines: Some(5), ..logs_request("brief") }).await;
    assert!(!text_of(&second).contains("kept until stopped"));

    let run = scratch.path().join("logs").join(format!("run-{}", server.pid()));
    assert!(run.exists());
    server.terminate();
    assert!(!run.exists(), "the run's directory is removed at shutdown");
    assert!(scratch.path().join("logs").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_retention_files_stay_until_it_elapses_and_past_shutdown() {
    const RETENTION: Duration = Duration::from_millis(1500);
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut server = server(&scratch, "  log_retention_seconds: 1.5\n");
    let mut client = server.client().await;
    client.start(start_request(shell("kept", "echo kept; sleep 300"))).await.expect("start");
    // The line itself, not only the file: under load the shell may not have run `echo` yet.
    eventually("the output file holds the line", Duration::from_secs(10), async || {
        process_directories(&scratch, &server, "kept").iter().any(|directory| {
            std::fs::read(directory.join("output"))
                .is_ok_and(|output| output.windows(5).any(|window| window == b"kept\n"))
        })
    })
    .await;
    client.stop(stop_process("kept")).await.expect("stop");
    let stopped = Instant::now();
    let directories = process_directories(&scratch, &server, "kept");
    assert_eq!(directories.len(), 1, "kept after the Stop");
    let output = std::fs::read(directories[0].join("output")).expect("the file is readable");
    assert!(output.windows(5).any(|window| window == b"kept\n"));
    eventually("the files are removed", Duration::from_secs(30), async || {
        process_directories(&scratch, &server, "kept").is_empty()
    })
    .await;
    let kept_for = stopped.elapsed();
    assert!(kept_for >= RETENTION - Duration::from_millis(100), "removed after {kept_for:?}");

    client.start(start_request(shell("at-shutdown", "echo bye; sleep 300"))).await.expect("start");
    eventually("the output file exists", Duration::from_secs(10), async || {
        !process_directories(&scratch, &server, "at-shutdown").is_empty()
    })
    .await;
    let run = scratch.path().join("logs").join(format!("run-{}", server.pid()));
    server.terminate();
    assert!(run.exists(), "with retention, the run's files outlive the server");

    // The next server on this log_dir removes the run of the one that is gone.
    let next = self::server(&scratch, "");
    assert!(!run.exists(), "the next server removes a dead server's run");
    drop(next);
}
