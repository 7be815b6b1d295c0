//! The server's one shutdown signal: it stops the listeners ([`Closing::closed`]) and ends the
//! endless response streams (Watch, a followed Logs), which a graceful shutdown would otherwise
//! wait for, since they never end on their own.
//!
//! A stream is polled for every message it sends, and a shutdown future polled beside it (a
//! `Notify` behind a mutex, as `tokio::sync::watch` and `CancellationToken` have) cost a
//! measurable share of the server's CPU per Watch event delivered to many watchers. Here a poll
//! costs an atomic load and a waker check, and closing wakes each stream
//! (docs/decisions/0005-closing-streams.md).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::Stream;
use futures::task::AtomicWaker;

/// The server's closing, shared by the streams it ends.
#[derive(Clone, Default)]
pub struct Closing {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    closed: AtomicBool,
    /// The open streams' wakers, by a number each stream keeps to take its own out.
    open: Mutex<HashMap<u64, Arc<AtomicWaker>>>,
    next: AtomicU64,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<AtomicWaker>>> {
        // The map is whole between statements: a panic elsewhere cannot leave it half changed.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Closing {
    /// Ends every stream given to [`Closing::until_closed`], now and later.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        for waker in self.shared.open().values() {
            waker.wake();
        }
    }

    /// `stream`, ending when the server closes (at once if it has).
    pub fn until_closed<S>(&self, stream: S) -> UntilClosed<S> {
        let waker = Arc::new(AtomicWaker::new());
        let key = self.shared.next.fetch_add(1, Ordering::Relaxed);
        self.shared.open().insert(key, Arc::clone(&waker));
        UntilClosed { stream, shared: Arc::clone(&self.shared), waker, key }
    }

    /// Completes when the server closes (at once if it has).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut never = self.until_closed(futures::stream::pending::<()>());
        async move {
            futures::StreamExt::next(&mut never).await;
        }
    }

    /// How many streams are open (for tests).
    #[cfg(test)]
    fn open_streams(&self) -> usize {
        self.shared.open().len()
    }
}

/// A stream that ends when the server closes.
pub struct UntilClosed<S> {
    stream: S,
    shared: Arc<Shared>,
    waker: Arc<AtomicWaker>,
    key: u64,
}

impl<S: Stream + Unpin> Stream for UntilClosed<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        // Registered before the check, so a close between the two still wakes this task.
        self.waker.register(cx.waker());
        if self.shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl<S> Drop for UntilClosed<S> {
    fn drop(&mut self) {
        self.shared.open().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_stream_runs_until_the_close_and_a_later_one_ends_at_once() {
        let closing = Closing::default();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut open = closing.until_closed(tokio_stream::wrappers::UnboundedReceiverStream::new(receiver));
        sender.send(1).expect("send");
        assert_eq!(open.next().await, Some(1));
        // A task waiting for the next item, with none coming, is woken by the close.
        let waiting = tokio::spawn(async move { open.next().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing ended it yet");
        closing.close();
        let ended =
            tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("joined");
        assert_eq!(ended, None);
        assert_eq!(closing.open_streams(), 0, "the ended stream was dropped with its task");

        let mut later = closing.until_closed(futures::stream::iter([3]));
        assert_eq!(later.next().await, None, "a stream opened after the close ends at once");
    }

    #[tokio::test]
    async fn closed_completes_on_the_close_and_at_once_after_it() {
        let closing = Closing::default();
        let waiting = tokio::spawn(closing.closed());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing closed yet");
        closing.close();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("joined");
        tokio::time::timeout(Duration::from_secs(5), closing.closed()).await.expect("at once");
        assert_eq!(closing.open_streams(), 0);
    }

    #[test]
    fn dropped_streams_leave_nothing_behind() {
        let closing = Closing::default();
        let streams: Vec<_> =
            (0..3).map(|_| closing.until_closed(futures::stream::pending::<()>())).collect();
        assert_eq!(closing.open_streams(), 3);
        drop(streams);
        assert_eq!(closing.open_streams(), 0);
    }
}
