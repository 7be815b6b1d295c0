//! `Logs`: check the request, then pass the runtime's output on as `LogChunk`s.

use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::audit;
use crate::proto;
use crate::runtime::logs::{LogPiece, LogSource, LogsQuery, StreamFilter};
use crate::security::access::Caller;
use crate::spec::{Violations, dns_label_rule};
use crate::telemetry::call;
use crate::transport::connections::Peer;

/// The stream a Logs call answers with.
pub type LogsStream = BoxStream<'static, Result<proto::LogChunk, Status>>;

/// A checked Logs request.
#[derive(Debug, PartialEq)]
pub struct Logs {
    /// The process.
    pub process_name: String,
    /// What of its output.
    pub query: LogsQuery,
    /// Whether chunks carry their time.
    pub timestamps: bool,
}

/// Checks every field of the request, naming each one at fault; `now` anchors `since_duration`.
pub fn parse(request: proto::LogsRequest, now: jiff::Timestamp) -> Result<Logs, AppError> {
    use proto::logs_request::Since;
    let mut violations = Violations::default();
    if let Err(rule) = dns_label_rule(&request.process_name) {
        violations.add("process_name", rule);
    }
    let since = match request.since {
        None => None,
        Some(Since::SinceDuration(prost_types::Duration { seconds, nanos })) => {
            let ago = (seconds >= 0 && (0..1_000_000_000).contains(&nanos))
                .then(|| jiff::SignedDuration::new(seconds, nanos))
                .and_then(|ago| now.checked_sub(ago).ok());
            if ago.is_none() {
                violations.add(
                    "since_duration",
                    format!(
                        "must be a duration of zero or more, nanos between 0 and 999999999, not before year -9999; got {{seconds: {seconds}, nanos: {nanos}}}"
                    ),
                );
            }
            ago
        }
        Some(Since::SinceTime(prost_types::Timestamp { seconds, nanos })) => {
            let time = if nanos < 0 { None } else { jiff::Timestamp::new(seconds, nanos).ok() };
            if time.is_none() {
                violations.add(
                    "since_time",
                    format!(
                        "must be a time between years -9999 and 9999 with nanos between 0 and 999999999; got {{seconds: {seconds}, nanos: {nanos}}}"
                    ),
                );
            }
            time
        }
    };
    let streams = match proto::LogStream::try_from(request.stream) {
        Ok(proto::LogStream::Unspecified | proto::LogStream::Combined) => StreamFilter::Both,
        Ok(proto::LogStream::Stdout) => StreamFilter::Stdout,
        Ok(proto::LogStream::Stderr) => StreamFilter::Stderr,
        Err(_) => {
            violations.add(
                "stream",
                format!(
                    "must be LOG_STREAM_STDOUT, LOG_STREAM_STDERR or LOG_STREAM_COMBINED; got {}",
                    request.stream
                ),
            );
            StreamFilter::Both
        }
    };
    violations.into_fields_result()?;
    Ok(Logs {
        process_name: request.process_name,
        query: LogsQuery {
            follow: request.follow,
            tail_lines: request.tail_lines,
            since,
            previous: request.previous,
            streams,
        },
        timestamps: request.timestamps,
    })
}

/// The wire form of a piece of output; its time only when the caller asked for times.
pub fn chunk_to_proto(piece: LogPiece, timestamps: bool) -> proto::LogChunk {
    let stream = match piece.stream {
        LogSource::Stdout => proto::LogStream::Stdout,
        LogSource::Stderr => proto::LogStream::Stderr,
        LogSource::Combined => proto::LogStream::Combined,
    };
    proto::LogChunk {
        data: piece.data,
        stream: stream.into(),
        timestamp: piece.time.filter(|_| timestamps).map(|time| prost_types::Timestamp {
            seconds: time.as_second(),
            nanos: time.subsec_nanosecond(),
        }),
    }
}

/// Handles one Logs call, with its audit line (output shows what a process printed, which may be
/// as sensitive as its spec).
pub async fn handle(
    processes: &Processes,
    request: proto::LogsRequest,
    caller: &Caller,
    peer: &Peer,
) -> Result<LogsStream, Status> {
    let target = audit::logs_target(&request);
    call::record_target(Some(&request.process_name), None);
    let result = match parse(request, jiff::Timestamp::now()) {
        Ok(logs) => {
            let timestamps = logs.timestamps;
            processes.logs(&logs.process_name, logs.query, caller).await.map(|pieces| {
                pieces
                    .map(move |piece| {
                        piece
                            .map(|piece| chunk_to_proto(piece, timestamps))
                            .map_err(|error| Status::from(AppError::from(error)))
                    })
                    .boxed()
            })
        }
        Err(error) => Err(error),
    };
    audit::answer("Logs", caller, peer, &target, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> proto::LogsRequest {
        proto::LogsRequest { process_name: name.to_owned(), ..proto::LogsRequest::default() }
    }

    #[test]
    fn a_request_becomes_a_query() {
        use proto::logs_request::Since;
        let now = jiff::Timestamp::from_second(1_000_000).expect("a time");
        let mut asked = request("web");
        asked.follow = true;
        asked.tail_lines = Some(3);
        asked.since = Some(Since::SinceDuration(prost_types::Duration { seconds: 600, nanos: 0 }));
        asked.stream = proto::LogStream::Stderr.into();
        asked.timestamps = true;
        let logs = parse(asked, now).expect("valid");
        assert_eq!(logs.query.since, Some(jiff::Timestamp::from_second(999_400).expect("a time")));
        assert_eq!(logs.query.tail_lines, Some(3));
        assert_eq!(logs.query.streams, StreamFilter::Stderr);
        assert!(logs.query.follow && logs.timestamps && !logs.query.previous);

        let mut at = request("web");
        at.since = Some(Since::SinceTime(prost_types::Timestamp { seconds: 5, nanos: 7 }));
        assert_eq!(
            parse(at, now).expect("valid").query.since,
            Some(jiff::Timestamp::new(5, 7).expect("a time"))
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        use proto::logs_request::Since;
        let now = jiff::Timestamp::now();
        let mut bad = request("Not_A_Name");
        bad.stream = 9;
        let message = parse(bad, now).expect_err("invalid").to_string();
        assert!(message.contains("process_name") && message.contains("stream"), "{message}");
        for since in [
            Since::SinceDuration(prost_types::Duration { seconds: -1, nanos: 0 }),
            Since::SinceDuration(prost_types::Duration { seconds: 1, nanos: 2_000_000_000 }),
            Since::SinceDuration(prost_types::Duration { seconds: i64::MAX, nanos: 0 }),
            Since::SinceTime(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
            Since::SinceTime(prost_types::Timestamp { seconds: 0, nanos: -1 }),
        ] {
            let mut bad = request("web");
            bad.since = Some(since);
            let message = parse(bad, now).expect_err("invalid").to_string();
            assert!(message.contains("since_"), "{since:?}: {message}");
        }
    }

    #[test]
    fn times_are_sent_only_when_asked_for() {
        let piece = LogPiece {
            data: bytes::Bytes::from_static(b"\xffbinary\n"),
            stream: LogSource::Combined,
            time: Some(jiff::Timestamp::from_second(7).expect("a time")),
        };
        let plain = chunk_to_proto(piece.clone(), false);
        assert_eq!((plain.data.as_ref(), plain.timestamp), (&b"\xffbinary\n"[..], None));
        assert_eq!(plain.stream, proto::LogStream::Combined as i32);
        assert_eq!(chunk_to_proto(piece, true).timestamp.map(|time| time.seconds), Some(7));
    }
}
