//! Rate-limited warnings for failures that repeat: a watch that cannot reach the API server
//! fails again at every backoff step, and one line per attempt would bury everything else in
//! the log. At most one line per cause per [`LogLimit`] window is written; the next one says how
//! many were left out meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Allows one log line per cause per window, counting the lines it holds back.
pub struct LogLimit {
    window: Duration,
    causes: Mutex<HashMap<String, Cause>>,
}

/// What the limit remembers of one cause.
struct Cause {
    last_logged: Instant,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of one line per cause every `window`.
    pub fn new(window: Duration) -> LogLimit {
        LogLimit { window, causes: Mutex::new(HashMap::new()) }
    }

    /// Whether a line about `cause` may be written now: `Some(n)` with the number of lines held
    /// back since the last one, or `None` (counted) when one was written less than a window ago.
    pub fn allow(&self, cause: &str) -> Option<u64> {
        let now = Instant::now();
        // A panic cannot leave the map half-updated: every change is one insert or two stores.
        let mut causes = self.causes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match causes.get_mut(cause) {
            Some(known) if now.duration_since(known.last_logged) < self.window => {
                known.suppressed += 1;
                None
            }
            Some(known) => {
                let suppressed = std::mem::take(&mut known.suppressed);
                known.last_logged = now;
                Some(suppressed)
            }
            None => {
                causes.insert(cause.to_owned(), Cause { last_logged: now, suppressed: 0 });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_cause_per_window_and_the_next_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(5));
        assert_eq!(limit.allow("pods: connect"), Some(0));
        // Dozens of failures a second: all held back for the rest of the window.
        for _ in 0..40 {
            tokio::time::advance(Duration::from_millis(100)).await;
            assert_eq!(limit.allow("pods: connect"), None);
        }
        // Another cause has its own window.
        assert_eq!(limit.allow("services: connect"), Some(0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limit.allow("pods: connect"), Some(40), "the next line says how many were left out");
        assert_eq!(limit.allow("pods: connect"), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(limit.allow("pods: connect"), Some(1));
    }
}
