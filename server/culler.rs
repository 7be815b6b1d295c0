//! The process culler, as Hydroplane had: every `culling_interval_minutes`, stop every process
//! older than `max_age_minutes`, on any runtime. A failed pass is logged and tried again at the
//! next interval; nothing stops the culler but the server's shutdown.

use std::time::Duration;

use crate::app::{AppError, Processes};
use crate::config::CullingSettings;
use crate::runtime::{RuntimeError, StopTarget};
use crate::security::access::Caller;
use crate::spec::ProcessStatus;
use crate::table::Filter;

/// Runs the culler until the task is dropped.
pub async fn run(processes: Processes, settings: CullingSettings) {
    let max_age = settings.max_age();
    let mut interval = tokio::time::interval(settings.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(?max_age, interval = ?interval.period(), "culling old processes");
    loop {
        interval.tick().await;
        let culled = cull_once(&processes, max_age, jiff::Timestamp::now()).await;
        if !culled.is_empty() {
            tracing::info!(?culled, "culled processes older than the maximum age");
        }
    }
}

/// Stops every process created more than `max_age` before `now`; returns the names stopped.
/// Failures are logged, never returned: the next pass tries again.
pub async fn cull_once(processes: &Processes, max_age: Duration, now: jiff::Timestamp) -> Vec<String> {
    let max_age = jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX);
    let too_old: Vec<_> = processes
        .list(Filter::default(), &Caller::unrestricted("culler"))
        .into_iter()
        .filter(|process| process.status != ProcessStatus::Stopping)
        .filter(|process| now.duration_since(process.created) > max_age)
        .collect();
    let mut culled = Vec::new();
    for process in too_old {
        tracing::info!(process = %process.process_name, created = %process.created, "stopping a process older than the maximum age");
        match processes
            .stop(StopTarget::Process(process.process_name.clone()), &Caller::unrestricted("culler"))
            .await
        {
            Ok(stopped) => culled.extend(stopped),
            // Stopped by someone else meanwhile: nothing to do.
            Err(AppError::Runtime(RuntimeError::NotFound { .. })) => {}
            Err(error) => {
                tracing::warn!(process = %process.process_name, %error, "cannot cull a process; trying again next pass")
            }
        }
    }
    culled
}
