//! The watch follower: one kube-runtime watcher per kind, driven into the index, with failed
//! watches retried after the [`RECONNECT`] delays.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::Index;
use crate::backoff::Backoff;

/// The delay between attempts to re-establish a failed watch: doubling from 250 ms up to 5 s, so
/// that an API server that comes back is followed again within seconds (kube-runtime's default
/// waits up to 30 s), yet one that stays down is not hammered.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Drives one watcher into the index, retrying failed watches after the [`RECONNECT`] delays.
pub(super) async fn follow<K>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    kind: &'static str,
    index: &Arc<Index>,
    apply: fn(&Index, Event<K>),
) {
    let stream = stream.backoff(RECONNECT);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => apply(index, event),
            Err(error) => index.record_error(kind, &error),
        }
    }
}
