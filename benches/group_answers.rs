//! Benchmark of the kept answers to group Lists ([`GroupAnswers`]) when they are full of small
//! groups: what keeping a new answer costs when it must push the least recently listed one out,
//! and what a kept answer costs to fetch. With single-process groups the 8 MiB budget holds
//! tens of thousands of answers, the case where a controller that lists every group in turn
//! makes the server evict on every List.
//!
//! Run with `cargo bench --bench group_answers` (`-- --answer-bytes N` for the answers' size).
//! Prints numbers; asserts nothing about them.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant};

use common::{argument, percentile};
use hydroplane::grpc::group_answers::{GroupAnswers, KEPT_BYTES};
use prost::bytes::Bytes;

const CALLS: usize = 20_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let answer_bytes = argument(&args, "--answer-bytes", 200);
    let answer = Bytes::from(vec![7u8; answer_bytes]);
    let answers = GroupAnswers::default();
    let mut group = 0usize;
    while answers.kept_bytes() + answer_bytes * 2 < KEPT_BYTES {
        answers.keep(&format!("group-{group}"), 1, 1, answer.clone());
        group += 1;
    }
    println!("kept answers: {group} of {answer_bytes} bytes, {} bytes kept", answers.kept_bytes());

    let names: Vec<String> = (group..group + CALLS).map(|index| format!("group-{index}")).collect();
    let mut keeps: Vec<Duration> = Vec::with_capacity(CALLS);
    for name in &names {
        let begin = Instant::now();
        answers.keep(name, 1, 1, answer.clone());
        keeps.push(begin.elapsed());
    }
    micros("keep a new answer, pushing the oldest out", &mut keeps);

    // The answers kept last are all still there.
    let kept = &names[CALLS.saturating_sub(group)..];
    let mut gets: Vec<Duration> = Vec::with_capacity(CALLS);
    for name in kept.iter().cycle().take(CALLS) {
        let begin = Instant::now();
        let kept = answers.get(name, 1, 1000);
        gets.push(begin.elapsed());
        assert!(kept.is_some(), "{name} is kept");
    }
    micros("get a kept answer", &mut gets);
}

/// Prints one line: the count, p50 and p99 in microseconds.
fn micros(name: &str, samples: &mut [Duration]) {
    let p50 = percentile(samples, 0.5).as_secs_f64() * 1e6;
    let p99 = percentile(samples, 0.99).as_secs_f64() * 1e6;
    println!("{name:<44} n={:<6} p50={p50:>8.2} us  p99={p99:>8.2} us", samples.len());
}
