//! Logs from the engine: the container's log with the engine's timestamps (each line's time is
//! the piece's `time`, and the prefix is taken off), standard output and standard error apart.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bytes::Bytes;
use futures::StreamExt;

use super::engine_message;
use crate::runtime::RuntimeError;
use crate::runtime::logs::{LogPiece, LogPieces, LogSource, LogsQuery, StreamFilter};

/// The output of a container, as the query asks.
pub fn serve(docker: Docker, id: String, query: LogsQuery) -> LogPieces {
    let options = LogsOptions {
        follow: query.follow,
        stdout: query.streams != StreamFilter::Stderr,
        stderr: query.streams != StreamFilter::Stdout,
        // The engine takes whole seconds: output of the second before `since` is dropped below.
        since: query.since.map_or(0, |since| i32::try_from(since.as_second()).unwrap_or(0)),
        until: 0,
        timestamps: true,
        tail: query.tail_lines.map_or_else(|| "all".to_owned(), |lines| lines.to_string()),
    };
    let since = query.since;
    docker
        .logs(&id, Some(options))
        .filter_map(move |output| {
            let piece = match output {
                Ok(LogOutput::StdOut { message }) => Some(Ok(piece(message, LogSource::Stdout))),
                Ok(LogOutput::StdErr { message }) => Some(Ok(piece(message, LogSource::Stderr))),
                Ok(LogOutput::Console { message }) => Some(Ok(piece(message, LogSource::Combined))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(error) => Some(Err(RuntimeError::Unavailable {
                    runtime: "docker",
                    message: format!("cannot read the container's output: {}", engine_message(&error)),
                })),
            };
            let piece = piece.filter(|piece| match (piece, since) {
                (Ok(LogPiece { time: Some(time), .. }), Some(since)) => *time >= since,
                _ => true,
            });
            futures::future::ready(piece)
        })
        .boxed()
}

/// One line of the engine's log, its timestamp prefix taken off.
fn piece(message: Bytes, stream: LogSource) -> LogPiece {
    let split = message.iter().position(|byte| *byte == b' ');
    let time =
        split.and_then(|split| std::str::from_utf8(&message[..split]).ok()?.parse::<jiff::Timestamp>().ok());
    match (split, time) {
        (Some(split), Some(time)) => LogPiece { data: message.slice(split + 1..), stream, time: Some(time) },
        _ => LogPiece { data: message, stream, time: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_becomes_the_time() {
        let line =
            piece(Bytes::from_static(b"2026-12-07T20:36:08.235444303Z hello world\n"), LogSource::Stdout);
        assert_eq!(line.data, Bytes::from_static(b"hello world\n"));
        assert_eq!(line.time.unwrap().to_string(), "2026-12-07T20:36:08.235444303Z");
        let bare = piece(Bytes::from_static(b"no time here"), LogSource::Stderr);
        assert_eq!((bare.data, bare.time), (Bytes::from_static(b"no time here"), None));
    }
}
