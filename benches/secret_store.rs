//! Benchmarks of the local secret store: key derivation at the store's real iteration count, and
//! the latency of `get`, of a keyed `resolve` and of `add` (which syncs to disk twice).
//!
//! Run with `cargo bench --bench secret_store`. Prints numbers; asserts nothing about them.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use hydroplane::secrets::{IfExists, LocalSecretStore, Password, SecretStore, TEST_ITERATIONS_ENV};
use hydroplane::spec::SecretReference;

const OPENS: usize = 5;
const ADDS: usize = 300;
const GETS: usize = 3000;

fn main() {
    if std::env::var_os(TEST_ITERATIONS_ENV).is_some() {
        eprintln!("note: {TEST_ITERATIONS_ENV} is set, so the key derivation below is not the real one");
    }
    let temp = tempfile::tempdir().expect("a temporary directory");
    let root = temp.path().join("store");
    let password = Password::from("benchmark password");

    let start = Instant::now();
    let store = LocalSecretStore::init(&root, &password).expect("init");
    let init_time = start.elapsed();
    let opens: Vec<Duration> = (0..OPENS)
        .map(|_| {
            let start = Instant::now();
            LocalSecretStore::open(&root, &password).expect("open");
            start.elapsed()
        })
        .collect();
    println!("key derivation: PBKDF2-HMAC-SHA256, {} iterations", store.iterations());
    println!("  init (derive + write header): {}", millis(init_time));
    println!("  open (derive + check), {OPENS} runs: {}", summary(opens));

    let value = br#"{"AccessKeyId":"AKIAEXAMPLEKEYID7Q3Z","SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#;
    let adds: Vec<Duration> = (0..ADDS)
        .map(|index| {
            let name = format!("secret-{index}");
            let start = Instant::now();
            store.add(&name, value, IfExists::Fail).expect("add");
            start.elapsed()
        })
        .collect();
    println!("add of a {}-byte value (new name), {ADDS} runs: {}", value.len(), summary(adds));
    let replaces: Vec<Duration> = (0..ADDS)
        .map(|_| {
            let start = Instant::now();
            store.add("secret-0", value, IfExists::Replace).expect("replace");
            start.elapsed()
        })
        .collect();
    println!("add --force (replace), {ADDS} runs: {}", summary(replaces));

    let whole = SecretReference { secret_name: "secret-7".to_owned(), key: None };
    let keyed = SecretReference { secret_name: "secret-7".to_owned(), key: Some("AccessKeyId".to_owned()) };
    for (label, reference) in [("get (whole value)", &whole), ("resolve (one JSON key)", &keyed)] {
        let gets: Vec<Duration> = (0..GETS)
            .map(|_| {
                let start = Instant::now();
                let resolved = store.resolve(reference).expect("resolve");
                let elapsed = start.elapsed();
                std::hint::black_box(resolved);
                elapsed
            })
            .collect();
        println!("{label}, {GETS} runs: {}", summary(gets));
    }
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize];
    format!("p50 {} p99 {} max {}", micros(at(0.5)), micros(at(0.99)), micros(at(1.0)))
}

fn micros(duration: Duration) -> String {
    if duration >= Duration::from_millis(10) {
        millis(duration)
    } else {
        format!("{:.1} µs", duration.as_secs_f64() * 1e6)
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}
