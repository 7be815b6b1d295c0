//! The one way a test waits for something it is not told about: [`eventually`] runs a check
//! until it holds, and on timeout panics with what was awaited and what the check last saw.

use std::fmt::Debug;
use std::time::Duration;

use futures::FutureExt;

/// The pause between two checks: short next to every timeout the tests give, long enough that
/// a check which asks a server or spawns `kubectl` does not flood it.
const BETWEEN_CHECKS: Duration = Duration::from_millis(50);

/// Runs `check` until it holds and returns what it found. After `timeout` it panics, naming
/// `what` was awaited and the last thing the check saw instead. A check gives a `bool`, an
/// `Option` (`Some` holds) or a `Result` (`Ok` holds; the `Err` is what was seen).
pub async fn eventually<Outcome: Attempt>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Outcome,
) -> Outcome::Found {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let seen = match check().await.outcome() {
            Ok(found) => return found,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}; last seen: {seen:?}");
        }
        tokio::time::sleep(BETWEEN_CHECKS).await;
    }
}

/// What one check of [`eventually`] gives: what it found, or what it saw instead.
pub trait Attempt {
    /// What a check that holds found.
    type Found;
    /// What a check that does not hold saw, for the timeout's message.
    type Seen: Debug;
    /// Found or seen.
    fn outcome(self) -> Result<Self::Found, Self::Seen>;
}

impl Attempt for bool {
    type Found = ();
    type Seen = bool;
    fn outcome(self) -> Result<(), bool> {
        if self { Ok(()) } else { Err(false) }
    }
}

impl<T> Attempt for Option<T> {
    type Found = T;
    type Seen = &'static str;
    fn outcome(self) -> Result<T, &'static str> {
        self.ok_or("None")
    }
}

impl<T, Seen: Debug> Attempt for Result<T, Seen> {
    type Found = T;
    type Seen = Seen;
    fn outcome(self) -> Result<T, Seen> {
        self
    }
}

#[tokio::test(start_paused = true)]
async fn a_check_that_holds_returns_what_it_found() {
    let mut checks = 0;
    let found = eventually("the third check", Duration::from_secs(1), async || {
        checks += 1;
        if checks == 3 { Ok(checks * 10) } else { Err(checks) }
    })
    .await;
    assert_eq!((found, checks), (30, 3));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_names_what_was_awaited_and_the_last_value_seen() {
    let mut checks = 0;
    let waiting = eventually("the count reaches 1000", Duration::from_secs(1), async || {
        checks += 1;
        Err::<(), _>(format!("count {checks}"))
    });
    let panic = std::panic::AssertUnwindSafe(waiting).catch_unwind().await.expect_err("times out");
    let message = panic.downcast_ref::<String>().expect("a message");
    assert!(
        message.starts_with("timed out after 1s waiting until the count reaches 1000; last seen: \"count "),
        "{message}"
    );
    eventually("a bool", Duration::ZERO, async || true).await;
}
