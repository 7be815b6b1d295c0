//! Fault injection: latency, random 5xx/429 errors (a 429 with `Retry-After`, as API Priority
//! and Fairness sends it), watches closed after N events or at once, forced 410 Gone, and
//! refusing connections for a while, and API Priority and Fairness's answer to too many
//! requests at once (429 with `Retry-After` above `max_requests_inflight`), set by flags or at
//! run time through `POST /_sim/faults`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;

/// The standing faults, as `GET /_sim/faults` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// The fraction (0.0..=1.0) of API requests answered with `error_code`.
    pub error_rate: f64,
    /// 500 (InternalError), 503 (ServiceUnavailable) or 429 (TooManyRequests).
    pub error_code: u16,
    /// When non-zero, each watch is closed after sending this many events.
    pub close_watches_after_events: u64,
    /// The `Retry-After` (and `details.retryAfterSeconds`) of an injected 429.
    pub retry_after_seconds: u64,
    /// When non-zero, API requests beyond this many in flight at once get a 429 with
    /// `Retry-After` (watches and log follows, long-running, are not counted), as the API
    /// server's `--max-requests-inflight` with APF.
    pub max_requests_inflight: u64,
}

/// The `Retry-After` of a real API server's 429 (API Priority and Fairness, max-in-flight).
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;

/// The longest `Retry-After` an injected 429 may carry.
pub const MAX_RETRY_AFTER_SECONDS: u64 = 3600;

impl Default for FaultSettings {
    /// No fault; a 500 when only a rate is set; a 429 says `Retry-After: 1`.
    fn default() -> Self {
        FaultSettings {
            latency_ms: 0,
            error_rate: 0.0,
            error_code: 500,
            close_watches_after_events: 0,
            retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
            max_requests_inflight: 0,
        }
    }
}

/// A `POST /_sim/faults` body: settings to change, and one-off actions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// New latency.
    pub latency_ms: Option<u64>,
    /// New error rate.
    pub error_rate: Option<f64>,
    /// New error code.
    pub error_code: Option<u16>,
    /// New watch event limit (0 = none).
    pub close_watches_after_events: Option<u64>,
    /// New `Retry-After` of injected 429s, in seconds.
    pub retry_after_seconds: Option<u64>,
    /// New limit of requests in flight (0 = none).
    pub max_requests_inflight: Option<u64>,
    /// Close every open watch now.
    #[serde(default)]
    pub drop_watches_now: bool,
    /// Forget the event history so resuming watches get 410 Gone.
    #[serde(default)]
    pub force_gone: bool,
    /// Close the listener and every connection, and listen again after this long.
    pub refuse_connections_for_ms: Option<u64>,
}

/// Why a fault request was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// error_rate outside 0..=1.
    #[error("error_rate must be between 0 and 1, got {0}")]
    BadRate(f64),
    /// An error code we do not inject.
    #[error("error_code must be 429, 500 or 503, got {0}")]
    BadCode(u16),
    /// A `Retry-After` longer than any test should wait.
    #[error("retry_after_seconds must be between 0 and {MAX_RETRY_AFTER_SECONDS}, got {0}")]
    BadRetryAfter(u64),
}

/// Shared fault state.
pub struct Faults {
    settings: Mutex<FaultSettings>,
    /// API requests seen (`/_sim/` ones are not), for `GET /_sim/stats`.
    requests: AtomicU64,
    /// Of those, the ones answered with an injected error.
    injected: AtomicU64,
    /// Requests being handled now (not counting long-running ones), shared with their slots.
    in_flight: Arc<AtomicU64>,
    drop_watches: watch::Sender<u64>,
    refuse: mpsc::UnboundedSender<Duration>,
}

impl Faults {
    /// Faults starting from `settings`; refusal requests go to the server loop via `refuse`.
    pub fn new(settings: FaultSettings, refuse: mpsc::UnboundedSender<Duration>) -> Faults {
        let (drop_watches, _) = watch::channel(0);
        Faults {
            settings: Mutex::new(settings),
            requests: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
            drop_watches,
            refuse,
        }
    }

    /// The current settings.
    pub fn settings(&self) -> FaultSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a request's settings (not its actions, which need the store and server).
    pub fn apply(&self, request: &FaultRequest) -> Result<FaultSettings, FaultError> {
        if let Some(rate) = request.error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(FaultError::BadRate(rate));
        }
        if let Some(code) = request.error_code
            && !matches!(code, 429 | 500 | 503)
        {
            return Err(FaultError::BadCode(code));
        }
        if let Some(seconds) = request.retry_after_seconds
            && seconds > MAX_RETRY_AFTER_SECONDS
        {
            return Err(FaultError::BadRetryAfter(seconds));
        }
        let mut settings = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(latency) = request.latency_ms {
            settings.latency_ms = latency;
        }
        if let Some(rate) = request.error_rate {
            settings.error_rate = rate;
        }
        if let Some(code) = request.error_code {
            settings.error_code = code;
        }
        if let Some(limit) = request.close_watches_after_events {
            settings.close_watches_after_events = limit;
        }
        if let Some(seconds) = request.retry_after_seconds {
            settings.retry_after_seconds = seconds;
        }
        if let Some(limit) = request.max_requests_inflight {
            settings.max_requests_inflight = limit;
        }
        Ok(settings.clone())
    }

    /// Clears every standing fault.
    pub fn reset(&self) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = FaultSettings::default();
    }

    /// The delay to add to a request, if any.
    pub fn latency(&self) -> Option<Duration> {
        let latency = self.settings().latency_ms;
        (latency > 0).then(|| Duration::from_millis(latency))
    }

    /// The error to answer with instead of handling the request, when the dice say so. Asked
    /// once per API request, so it counts them (see [`Faults::counts`]).
    pub fn injected_error(&self) -> Option<ApiError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let settings = self.settings();
        if settings.error_rate <= 0.0 || fastrand::f64() >= settings.error_rate {
            return None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        Some(match settings.error_code {
            429 => ApiError::TooManyRequests { retry_after_seconds: settings.retry_after_seconds },
            503 => ApiError::Unavailable,
            _ => ApiError::Internal("kube-sim: injected fault".into()),
        })
    }

    /// A slot for one request that is not long-running, held while it is handled; a 429 with
    /// `Retry-After` (counted as injected) when `max_requests_inflight` are held already.
    pub fn admit(&self) -> Result<InFlight, ApiError> {
        let settings = self.settings();
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = InFlight(Arc::clone(&self.in_flight));
        if settings.max_requests_inflight > 0 && before >= settings.max_requests_inflight {
            drop(slot);
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::TooManyRequests { retry_after_seconds: settings.retry_after_seconds });
        }
        Ok(slot)
    }

    /// API requests seen so far, and how many of them got an injected error.
    pub fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.injected.load(Ordering::Relaxed))
    }

    /// The per-watch event limit, 0 for none.
    pub fn close_watches_after(&self) -> u64 {
        self.settings().close_watches_after_events
    }

    /// A signal that changes whenever all watches must close.
    pub fn drop_signal(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }

    /// Closes every open watch.
    pub fn drop_watches_now(&self) {
        self.drop_watches.send_modify(|generation| *generation += 1);
    }

    /// Asks the server loop to stop listening for `duration`.
    pub fn refuse_connections_for(&self, duration: Duration) {
        // The server loop owns the receiver for the whole run; a send only fails at shutdown.
        let _ = self.refuse.send(duration);
    }
}

/// One request's place among those in flight; given back when dropped.
pub struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_change_only_what_they_name() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let faults = Faults::new(FaultSettings { error_code: 500, ..Default::default() }, sender);
        let request: FaultRequest = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap();
        let settings = faults.apply(&request).unwrap();
        assert_eq!(settings.latency_ms, 5);
        assert_eq!(settings.error_code, 500);
        assert!(faults.apply(&FaultRequest { error_rate: Some(2.0), ..Default::default() }).is_err());
        assert!(faults.apply(&FaultRequest { error_code: Some(404), ..Default::default() }).is_err());
        assert!(faults.injected_error().is_none());
        faults
            .apply(&FaultRequest { error_rate: Some(1.0), error_code: Some(429), ..Default::default() })
            .unwrap();
        assert!(matches!(
            faults.injected_error(),
            Some(ApiError::TooManyRequests { retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS })
        ));
        faults.apply(&FaultRequest { retry_after_seconds: Some(3), ..Default::default() }).unwrap();
        assert!(matches!(
            faults.injected_error(),
            Some(ApiError::TooManyRequests { retry_after_seconds: 3 })
        ));
        assert!(
            faults.apply(&FaultRequest { retry_after_seconds: Some(3601), ..Default::default() }).is_err()
        );
        faults.reset();
        assert_eq!(faults.settings(), FaultSettings::default());
        assert!(faults.injected_error().is_none());
        assert_eq!(faults.counts(), (4, 2), "every request counted, two were faulted");
        assert!(faults.injected_error().is_none());
        assert!(serde_json::from_str::<FaultRequest>(r#"{"latency": 5}"#).is_err());
    }

    #[test]
    fn requests_beyond_the_in_flight_limit_get_429_until_a_slot_is_given_back() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let faults = Faults::new(FaultSettings { max_requests_inflight: 2, ..Default::default() }, sender);
        let first = faults.admit().expect("first");
        let _second = faults.admit().expect("second");
        assert!(matches!(
            faults.admit(),
            Err(ApiError::TooManyRequests { retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS })
        ));
        drop(first);
        let _third = faults.admit().expect("a slot was given back");
        faults.apply(&FaultRequest { max_requests_inflight: Some(0), ..Default::default() }).unwrap();
        let _many: Vec<InFlight> = (0..10).map(|_| faults.admit().expect("no limit")).collect();
    }
}
