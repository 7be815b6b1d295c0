//! `hpctl logs NAME [-f] [--tail N] [--since DURATION|TIME] [--previous] [--timestamps]
//! [--stream stdout|stderr]`: a process's output, raw, on stdout (no JSON, so that it pipes into
//! `grep` or a file as the process wrote it, binary included).
//!
//! With `-f` it follows until the process ends or is stopped (exit 0), stdout closes, or the
//! server goes away (exit 1, saying so). `--timestamps` starts each line with the time it was
//! written (RFC 3339, as `kubectl logs --timestamps` does).

use std::io::Write;

use anyhow::anyhow;
use hydroplane_client::{Client, proto};
use tokio_stream::StreamExt;

use crate::output::{RunError, stdout_closed};

/// Arguments of `hpctl logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The process whose output to show.
    #[arg(value_name = "NAME")]
    process_name: String,
    /// Keep printing what the process writes until it ends or is stopped.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines of the output kept now (`-1`: all, as kubectl takes it).
    #[arg(long, value_name = "N", value_parser = parse_tail, allow_hyphen_values = true)]
    tail: Option<Tail>,
    /// Only output written since then: a duration before now (`10m`, `1h30m`, `45s`) or an
    /// RFC 3339 time (`2026-12-01T22:40:00Z`).
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since, allow_hyphen_values = true)]
    since: Option<Since>,
    /// The output of the run before the last restart (Kubernetes restarts a failed container).
    #[arg(long)]
    previous: bool,
    /// Start each line with the time it was written.
    #[arg(long)]
    timestamps: bool,
    /// One stream only, where the runtime keeps them apart (the local runtime does).
    #[arg(long, value_enum, value_name = "STREAM")]
    stream: Option<StreamArg>,
}

/// `--tail`: a count, or everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// All of it (`-1`).
    All,
    /// The last this many lines.
    Lines(u64),
}

/// `--since`: how long ago, or when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(std::time::Duration),
    /// This time.
    At(jiff::Timestamp),
}

/// `--stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamArg {
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
    /// Both, interleaved as written (the default).
    All,
}

fn parse_tail(text: &str) -> Result<Tail, String> {
    if text == "-1" {
        return Ok(Tail::All);
    }
    text.parse::<u64>()
        .map(Tail::Lines)
        .map_err(|_| "give a number of lines (0 or more), or -1 for all".to_owned())
}

fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(Since::At(time));
    }
    let duration: jiff::SignedDuration = text.parse().map_err(|_| {
        "give a duration (`10m`, `1h30m`, `45s`, `500ms`) or an RFC 3339 time (`2026-12-01T22:40:00Z`)"
            .to_owned()
    })?;
    if duration.is_negative() {
        return Err("a duration before now cannot be negative".to_owned());
    }
    std::time::Duration::try_from(duration).map(Since::Ago).map_err(|error| error.to_string())
}

impl LogsArgs {
    /// The request these arguments make.
    fn request(&self) -> proto::LogsRequest {
        use proto::logs_request::Since as WireSince;
        let since = self.since.map(|since| match since {
            Since::Ago(ago) => WireSince::SinceDuration(
                prost_types::Duration::try_from(ago)
                    .unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 0 }),
            ),
            Since::At(time) => WireSince::SinceTime(prost_types::Timestamp {
                seconds: time.as_second(),
                nanos: time.subsec_nanosecond(),
            }),
        });
        let stream = match self.stream {
            None | Some(StreamArg::All) => proto::LogStream::Unspecified,
            Some(StreamArg::Stdout) => proto::LogStream::Stdout,
            Some(StreamArg::Stderr) => proto::LogStream::Stderr,
        };
        proto::LogsRequest {
            process_name: self.process_name.clone(),
            follow: self.follow,
            tail_lines: match self.tail {
                None | Some(Tail::All) => None,
                Some(Tail::Lines(lines)) => Some(lines),
            },
            since,
            previous: self.previous,
            timestamps: self.timestamps,
            stream: stream.into(),
        }
    }
}

/// Puts the time at the start of every line when asked; output passes unchanged otherwise.
#[derive(Debug)]
struct Lines {
    timestamps: bool,
    /// Whether the next byte starts a line.
    at_line_start: bool,
}

impl Lines {
    fn new(timestamps: bool) -> Lines {
        Lines { timestamps, at_line_start: true }
    }

    /// Writes a chunk, each line that starts in it prefixed with its time.
    fn write(&mut self, out: &mut impl Write, chunk: &proto::LogChunk) -> std::io::Result<()> {
        if !self.timestamps {
            return out.write_all(&chunk.data);
        }
        let time = chunk
            .timestamp
            .and_then(|time| jiff::Timestamp::new(time.seconds, time.nanos).ok())
            .map_or_else(|| "-".to_owned(), |time| time.to_string());
        for line in chunk.data.split_inclusive(|&byte| byte == b'\n') {
            if self.at_line_start {
                write!(out, "{time} ")?;
            }
            out.write_all(line)?;
            self.at_line_start = line.ends_with(b"\n");
        }
        Ok(())
    }
}

/// Prints the output until the stream ends.
pub async fn run(client: &Client, args: LogsArgs) -> Result<(), RunError> {
    let server = client.target().to_string();
    let mut chunks = client.logs(args.request()).await?;
    let mut lines = Lines::new(args.timestamps);
    let mut stdout_closed = std::pin::pin!(stdout_closed());
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next() => chunk,
            () = &mut stdout_closed => return Err(RunError::StdoutClosed),
        };
        let chunk = match chunk {
            None => return Ok(()),
            Some(Ok(chunk)) => chunk,
            Some(Err(status)) if std::error::Error::source(&status).is_some() => {
                return Err(RunError::Other(anyhow!(
                    "the Hydroplane server at {server} went away while sending the output of `{}`: {}",
                    args.process_name,
                    status.message()
                )));
            }
            Some(Err(status)) => return Err(status.into()),
        };
        let mut stdout = std::io::stdout().lock();
        lines.write(&mut stdout, &chunk)?;
        // Flushed per chunk, so that a follower sees each line as it comes.
        stdout.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &[u8], seconds: i64) -> proto::LogChunk {
        proto::LogChunk {
            data: bytes::Bytes::copy_from_slice(data),
            stream: proto::LogStream::Stdout.into(),
            timestamp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
        }
    }

    #[test]
    fn timestamps_start_every_line_even_across_chunks() {
        let mut out = Vec::new();
        let mut lines = Lines::new(true);
        for piece in [chunk(b"one\ntw", 0), chunk(b"o\nthree\n", 60), chunk(b"\xff", 120)] {
            lines.write(&mut out, &piece).expect("written");
        }
        let expected = b"1970-01-01T00:00:00Z one\n1970-01-01T00:00:00Z two\n1970-01-01T00:01:00Z three\n1970-01-01T00:02:00Z \xff";
        assert_eq!(out, expected);
        let mut raw = Vec::new();
        Lines::new(false).write(&mut raw, &chunk(b"\x00\xffbytes", 0)).expect("written");
        assert_eq!(raw, b"\x00\xffbytes");
    }

    #[test]
    fn since_takes_durations_and_times_and_refuses_the_rest() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(std::time::Duration::from_secs(600))));
        assert_eq!(parse_since("1h30m"), Ok(Since::Ago(std::time::Duration::from_secs(5400))));
        assert_eq!(parse_since("500ms"), Ok(Since::Ago(std::time::Duration::from_millis(500))));
        assert_eq!(
            parse_since("2026-12-01T22:40:00Z"),
            Ok(Since::At(jiff::Timestamp::from_second(1_796_164_800).expect("a time")))
        );
        assert!(parse_since("-5m").unwrap_err().contains("negative"));
        assert!(parse_since("yesterday").unwrap_err().contains("give a duration"));
        assert_eq!(parse_tail("-1"), Ok(Tail::All));
        assert_eq!(parse_tail("3"), Ok(Tail::Lines(3)));
        assert!(parse_tail("-2").is_err() && parse_tail("three").is_err());
    }
}
