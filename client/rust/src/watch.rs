//! A watch that survives a broken connection: it resumes from the last revision the caller can
//! rely on, so the caller sees every change exactly once, or a RESET telling it to start over.
//!
//! The server's events carry revisions, and `since_revision` replays exactly what came after one.
//! Events of a snapshot (the ADDED events before SYNCED, on a fresh watch or after a RESET) all
//! carry the snapshot's revision, though, so resuming from one of them would skip the rest of the
//! snapshot: the resume point only moves on SYNCED and on live or replayed changes. A stream that
//! breaks in the middle of a snapshot with no earlier resume point is started over, preceded by a
//! RESET made here, so that the caller drops the partial snapshot instead of keeping processes
//! that are gone by the time of the new one.

use std::collections::hash_map::RandomState;
use std::error::Error as StdError;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tonic::{Code, Status, Streaming};

use crate::GrpcClient;
use crate::connect::NoAnswer;
use crate::proto::{WatchEvent, WatchEventType, WatchRequest};

/// How a [`Watch`] takes up a broken stream again: exponential backoff between attempts, with a
/// bound on the delay and on the number of attempts in a row that bring no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The delay before the first attempt after a break; it doubles with every failed attempt.
    pub first_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How many attempts in a row may bring no event before the watch ends with the last error;
    /// 0 turns resuming off (the watch then ends as the server's stream does).
    pub max_attempts: u32,
}

impl Default for Resume {
    /// 100 ms doubling up to 5 s, for 20 attempts: about a minute, enough for a server restart.
    fn default() -> Resume {
        Resume {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: 20,
        }
    }
}

impl Resume {
    /// The delay before attempt `attempt` (1 for the first after a break), with jitter, so that
    /// many clients cut off by one server restart do not all come back at the same instant.
    fn delay(&self, attempt: u32) -> Duration {
        let exponential = self.first_delay.saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let delay = exponential.min(self.max_delay);
        // Half the delay, plus a random part of the other half. RandomState is randomly keyed, so
        // a hash with it is random enough to spread clients out, with no RNG to depend on.
        let random = RandomState::new().build_hasher().finish();
        let fraction = (random % 1_000) as u32;
        delay / 2 + delay / 2 * fraction / 1_000
    }
}

/// Whether a failed stream or call is worth another attempt: UNAVAILABLE, or a status made here
/// from a transport error (the connection or the stream broke) rather than sent by the server,
/// which only statuses made from an error carry as their source.
fn broken(status: &Status) -> bool {
    status.code() == Code::Unavailable || StdError::source(status).is_some()
}

/// What a [`Watch`] goes through between events, for a program that tells its user (see
/// [`Watch::on_notice`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The stream broke, the server ended it, or opening one failed; attempt `attempt` (1 for the
    /// first after a break) follows after `delay`.
    Broken {
        /// What happened, in a few words.
        reason: String,
        /// The attempt that follows.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// The revision the next stream resumes after; `None`: it starts afresh.
        resume_after: Option<u64>,
    },
    /// A new stream is open after a break: a replay after this revision, or, with `None`, a
    /// fresh snapshot (the server had nothing to resume from on the caller's side).
    Resumed {
        /// The revision the replay starts after.
        after: Option<u64>,
    },
}

/// Who is told of [`Notice`]s.
type Observer = Arc<Mutex<Option<Box<dyn FnMut(Notice) + Send>>>>;

/// The events of a watch, resumed across broken streams (see [`crate::Client::watch`]).
///
/// A `Stream` of `Result<WatchEvent, Status>`; after an error it ends. Calls are made only while
/// it is polled, and dropping it ends the watch.
pub struct Watch {
    /// The events, from the state machine below.
    events: Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>,
    /// Who is told of breaks and resumptions.
    observer: Observer,
}

impl fmt::Debug for Watch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(context)
    }
}

impl Watch {
    /// A watch with this filter, resumed as `resume` says; opening a stream may take at most
    /// `open_timeout`.
    pub(crate) fn new(
        client: GrpcClient,
        request: WatchRequest,
        resume: Resume,
        open_timeout: Option<Duration>,
    ) -> Watch {
        let observer: Observer = Arc::default();
        let state = State {
            observer: Arc::clone(&observer),
            open_timeout,
            opened: false,
            resume_from: request.since_revision,
            last_revision: request.since_revision.unwrap_or(0),
            client,
            request,
            resume,
            stream: None,
            in_snapshot: false,
            partial: false,
            reset_pending: false,
            attempts: 0,
            done: false,
        };
        Watch { events: Box::pin(futures_util::stream::unfold(state, State::next)), observer }
    }

    /// Tells `observer` of every break and resumption (the events themselves still come through
    /// the stream), so that a program can say that the server went away while the watch waits
    /// for it.
    pub fn on_notice(self, observer: impl FnMut(Notice) + Send + 'static) -> Watch {
        *self.observer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Box::new(observer));
        self
    }
}

/// Where a watch stands.
struct State {
    /// Who is told of breaks and resumptions.
    observer: Observer,
    /// How long opening a stream may take.
    open_timeout: Option<Duration>,
    /// Whether a stream was ever opened, so that the next one is a resumption.
    opened: bool,
    /// The client the calls go through.
    client: GrpcClient,
    /// The caller's filter (its `since_revision` is replaced by `resume_from` on every call).
    request: WatchRequest,
    /// How to take up a broken stream.
    resume: Resume,
    /// The current stream, when one is open.
    stream: Option<Streaming<WatchEvent>>,
    /// The revision after which the caller has seen everything; `None` when it has no such point
    /// (before the first SYNCED, or after a RESET until the next).
    resume_from: Option<u64>,
    /// The last revision seen, for the RESET made here.
    last_revision: u64,
    /// Whether the current stream is sending a snapshot (after a RESET, or on a fresh watch),
    /// whose events all carry the snapshot's revision.
    in_snapshot: bool,
    /// Whether the caller holds snapshot events not yet completed by SYNCED.
    partial: bool,
    /// Whether a RESET made here is owed to the caller before the next stream's events.
    reset_pending: bool,
    /// The attempts since the last event.
    attempts: u32,
    /// Whether the watch has ended.
    done: bool,
}

/// What ended a stream or an attempt.
enum Break {
    /// The server ended the stream.
    Ended,
    /// The stream or the call failed.
    Failed(Status),
}

impl State {
    /// The next event, reconnecting as needed; `None` once the watch has ended.
    async fn next(mut self) -> Option<(Result<WatchEvent, Status>, State)> {
        if self.done {
            return None;
        }
        loop {
            let broke = match &mut self.stream {
                Some(stream) => match stream.message().await {
                    Ok(Some(event)) => return Some((Ok(self.seen(event)), self)),
                    Ok(None) => Break::Ended,
                    Err(status) => Break::Failed(status),
                },
                None => match self.open().await {
                    Ok(()) if self.reset_pending => {
                        self.reset_pending = false;
                        let reset = WatchEvent {
                            r#type: WatchEventType::Reset.into(),
                            process: None,
                            revision: self.last_revision,
                        };
                        return Some((Ok(reset), self));
                    }
                    Ok(()) => continue,
                    Err(status) => Break::Failed(status),
                },
            };
            self.stream = None;
            if let Break::Failed(status) = &broke
                && !broken(status)
            {
                return self.end(broke);
            }
            if self.attempts >= self.resume.max_attempts {
                return self.end(broke);
            }
            self.attempts += 1;
            let delay = self.resume.delay(self.attempts);
            let reason = match &broke {
                Break::Ended => "the server ended the stream".to_owned(),
                Break::Failed(status) => describe(status),
            };
            let resume_after = self.resume_from;
            self.notify(Notice::Broken { reason, attempt: self.attempts, delay, resume_after });
            tokio::time::sleep(delay).await;
        }
    }

    /// Calls Watch from the resume point, or afresh (owing the caller a RESET when it holds part
    /// of a snapshot).
    async fn open(&mut self) -> Result<(), Status> {
        let mut request = self.request.clone();
        request.since_revision = self.resume_from;
        let call = self.client.watch(request);
        let stream = match self.open_timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, call).await.map_err(|_| NoAnswer::new(timeout).status())??
            }
            None => call.await?,
        }
        .into_inner();
        if self.opened {
            self.notify(Notice::Resumed { after: self.resume_from });
        }
        self.opened = true;
        if self.resume_from.is_none() {
            self.in_snapshot = true;
            if self.partial {
                self.reset_pending = true;
                self.partial = false;
            }
        } else {
            // A replay: every event has its own revision, until a RESET says otherwise.
            self.in_snapshot = false;
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// Tells the observer, if any.
    fn notify(&self, notice: Notice) {
        if let Some(observer) = self.observer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut()
        {
            observer(notice);
        }
    }

    /// Moves the resume point past an event, which goes to the caller.
    fn seen(&mut self, event: WatchEvent) -> WatchEvent {
        self.attempts = 0;
        self.last_revision = event.revision;
        match event.r#type() {
            WatchEventType::Reset => {
                // The caller forgets what it knew; until SYNCED there is nothing to resume from.
                self.resume_from = None;
                self.in_snapshot = true;
                self.partial = true;
            }
            WatchEventType::Synced => {
                self.resume_from = Some(event.revision);
                self.in_snapshot = false;
                self.partial = false;
            }
            _ if self.in_snapshot => self.partial = true,
            _ => self.resume_from = Some(event.revision),
        }
        event
    }

    /// Ends the watch: quietly when the server ended it, else with the error.
    fn end(mut self, broke: Break) -> Option<(Result<WatchEvent, Status>, State)> {
        self.done = true;
        match broke {
            Break::Ended => None,
            Break::Failed(status) => Some((Err(status), self)),
        }
    }
}

/// A failure in a few words: the root cause rather than "transport error".
fn describe(status: &Status) -> String {
    let mut cause: Option<&(dyn StdError + 'static)> = StdError::source(status);
    let mut last = None;
    while let Some(error) = cause {
        last = Some(error.to_string());
        cause = error.source();
    }
    match last {
        Some(root) if !root.is_empty() => root,
        _ if status.message().is_empty() => status.code().description().to_owned(),
        _ => status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_with_jitter() {
        let resume = Resume::default();
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (6, 3_200), (7, 5_000), (50, 5_000)] {
            let delay = resume.delay(attempt);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn only_a_broken_transport_is_retried() {
        assert!(broken(&Status::unavailable("server going away")));
        assert!(!broken(&Status::unauthenticated("no token")));
        assert!(!broken(&Status::permission_denied("no read scope")));
        assert!(!broken(&Status::internal("sent by the server")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(broken(&Status::from_error(Box::new(io))));
    }
}
