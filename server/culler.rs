//! The process culler, as Hydroplane had: every `culling_interval_minutes`, stop every process
//! older than `max_age_minutes`, on any runtime. A failed pass is logged and tried again at the
//! next interval; nothing stops the culler but the server's shutdown.
//!
//! The settings were range-checked at load ([`CullingSettings`] holds `Duration`s), and the culler
//! still takes any `Duration` without panicking: a zero interval is raised to
//! [`MIN_INTERVAL`], and a maximum age too long for a timestamp means "never".

use std::time::Duration;

use crate::app::{AppError, Processes};
use crate::config::CullingSettings;
use crate::runtime::{RuntimeError, StopTarget};
use crate::security::access::Caller;
use crate::spec::ProcessStatus;

/// The shortest interval between passes, whatever the settings say (a zero period would panic
/// the timer).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Runs the culler until the task is dropped.
pub async fn run(processes: Processes, settings: CullingSettings) {
    let max_age = settings.max_age();
    let mut interval = tokio::time::interval(settings.interval().max(MIN_INTERVAL));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(?max_age, interval = ?interval.period(), "culling old processes");
    loop {
        interval.tick().await;
        let culled = cull_once(&processes, max_age, jiff::Timestamp::now()).await;
        if let Some(metrics) = processes.metrics() {
            metrics.domain.culler_passes.inc();
            metrics.domain.culled.inc_by(culled.len() as u64);
        }
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
        .all()
        .into_iter()
        .filter(|process| process.status != ProcessStatus::Stopping)
        .filter(|process| now.duration_since(process.created) > max_age)
        .collect();
    let mut culled = Vec::new();
    for process in too_old {
        tracing::info!(process = %process.process_name, created = %process.created, "stopping a process older than the maximum age");
        match processes
            .stop(StopTarget::Process(process.process_name.to_string()), &Caller::unrestricted("culler"))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::spec::{ContainerSpec, ProcessSpec};

    fn spec(name: &str) -> ProcessSpec {
        ProcessSpec {
            process_name: name.to_owned(),
            group: None,
            container: ContainerSpec { image_uri: "busybox".to_owned(), ..Default::default() },
            has_public_ip: false,
            labels: Default::default(),
            restart_policy: Default::default(),
            readiness: None,
            liveness: None,
            max_run_seconds: None,
        }
    }

    #[tokio::test]
    async fn processes_older_than_the_maximum_age_are_culled_and_younger_ones_kept() {
        let runtime = FakeRuntime::new();
        let now = jiff::Timestamp::now();
        runtime.insert(spec("old"), now - jiff::SignedDuration::from_mins(30));
        runtime.insert(spec("young"), now - jiff::SignedDuration::from_mins(5));
        let processes = Processes::new(Arc::clone(&runtime) as Arc<dyn crate::runtime::Runtime>);
        let culled = cull_once(&processes, Duration::from_secs(10 * 60), now).await;
        assert_eq!(culled, ["old"]);
        let left: Vec<String> =
            processes.all().iter().map(|process| process.process_name.to_string()).collect();
        assert_eq!(left, ["young"]);
        // With no age allowed, the rest go too.
        assert!(cull_once(&processes, Duration::ZERO, now).await == ["young"]);
    }

    #[tokio::test(start_paused = true)]
    async fn any_durations_run_without_panicking() {
        let runtime = FakeRuntime::new();
        runtime.insert(spec("old"), jiff::Timestamp::now() - jiff::SignedDuration::from_mins(30));
        let processes = Processes::new(Arc::clone(&runtime) as Arc<dyn crate::runtime::Runtime>);
        // The longest age keeps everything; a zero interval still ticks.
        assert!(cull_once(&processes, Duration::MAX, jiff::Timestamp::now()).await.is_empty());
        let settings = CullingSettings { max_age: Duration::ZERO, interval: Duration::ZERO };
        let culler = tokio::spawn(run(processes.clone(), settings));
        tokio::time::sleep(MIN_INTERVAL * 3).await;
        assert!(!culler.is_finished(), "the culler stopped");
        culler.abort();
    }
}
