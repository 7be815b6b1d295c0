//! `List`: one page, served from the runtime's process table, with no call to the runtime's
//! backend.

use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::convert;
use crate::grpc::group_answers::GroupAnswers;
use crate::grpc::wire::{self, ListReply};
use crate::metrics::OutcomeLabels;
use crate::proto;
use crate::security::access::Caller;
use crate::spec::Violations;
use crate::table::Filter;
use crate::table::listing::PageQuery;
use crate::telemetry::call;

/// Checks the request: its selector, and its paging.
pub fn parse(request: proto::ListRequest) -> Result<(Filter, PageQuery), AppError> {
    let mut violations = Violations::default();
    let selector = convert::selector_from_proto(request.label_selector.as_deref(), &mut violations);
    violations.into_fields_result()?;
    let size = usize::try_from(request.page_size).unwrap_or(usize::MAX);
    let filter = Filter { group: request.group, selector, ..Filter::default() };
    let token = request.page_token.filter(|token| !token.is_empty());
    Ok((filter, PageQuery { size, token, ..PageQuery::default() }))
}

/// Handles one List call; the answer is encoded from the table's entries without copying them
/// ([`ListReply`]), or is the group's kept answer when the group has not changed since it was
/// made ([`GroupAnswers`]).
pub fn handle(
    processes: &Processes,
    answers: &GroupAnswers,
    request: proto::ListRequest,
    caller: &Caller,
) -> Result<ListReply, Status> {
    call::record_target(None, request.group.as_deref());
    let (filter, page) = parse(request)?;
    let stale_reason = processes.staleness();
    let page_size = page.effective_size();
    // A first page of a whole group the caller may see all of: the same bytes for everyone.
    let whole_group = filter.group.as_deref().filter(|&group| {
        filter.selector.is_none() && page.token.is_none() && caller.groups.allows(Some(group))
    });
    if let Some(group) = whole_group
        && let (Some(changed), revision) = processes.group_version(group)
        && let Some(kept) = answers.get(group, changed, page_size)
    {
        count_answer(processes, answers, "kept");
        return Ok(ListReply::encoded(kept, stale_reason, revision));
    }
    // The name outlives the filter, which the listing takes; copied only when it may be kept.
    let whole_group = whole_group.map(str::to_owned);
    let page = processes.list(filter, page, caller)?;
    if let Some(group) = &whole_group
        && let Some(changed) = page.group_changed
        && page.next_page_token.is_none()
    {
        let encoded = wire::encode_processes(&page.processes);
        answers.keep(group, changed, page.processes.len(), encoded.clone());
        count_answer(processes, answers, "made");
        return Ok(ListReply::encoded(encoded, stale_reason, page.revision));
    }
    Ok(ListReply::new(page.processes, stale_reason, page.next_page_token, page.revision))
}

/// Counts a List of a whole group by its answer (`kept` or `made`), when metrics are on; after
/// a `made` one (the only kind that changes what is kept), also the bytes kept.
fn count_answer(processes: &Processes, answers: &GroupAnswers, outcome: &'static str) {
    if let Some(metrics) = processes.metrics() {
        metrics.domain.group_answers.get_or_create(&OutcomeLabels { outcome }).inc();
        if outcome == "made" {
            metrics.domain.group_answer_bytes.set(i64::try_from(answers.kept_bytes()).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::Runtime;
    use crate::runtime::fake::FakeRuntime;
    use crate::security::access::{Groups, parse_group_patterns};
    use crate::spec::{ProcessInfo, ProcessStatus};

    fn process(name: &str, group: &str) -> ProcessInfo {
        ProcessInfo::of_tests(name, Some(group), ProcessStatus::Running)
    }

    fn names(processes: &Processes, answers: &GroupAnswers, caller: &Caller, page_size: u32) -> Vec<String> {
        let request = proto::ListRequest { group: Some("g".into()), page_size, ..Default::default() };
        let reply = handle(processes, answers, request, caller).expect("a list").into_proto();
        reply.processes.into_iter().map(|process| process.process_name).collect()
    }

    #[test]
    fn a_whole_group_is_answered_from_its_kept_answer_while_it_does_not_change() {
        let runtime = FakeRuntime::new();
        for name in ["a", "b"] {
            runtime.table().upsert(process(name, "g"));
        }
        let processes = Processes::new(Arc::clone(&runtime) as Arc<dyn Runtime>);
        let anyone = Caller::anonymous();
        let answers = GroupAnswers::default();
        assert_eq!(names(&processes, &answers, &anyone, 0), ["a", "b"]);
        assert!(answers.kept_bytes() > 0, "the answer was kept");

        // An answer planted for the group's current change is what the List writes...
        let planted = GroupAnswers::default();
        let (Some(changed), _) = processes.group_version("g") else { panic!("g has processes") };
        planted.keep("g", changed, 1, wire::encode_processes(&[Arc::new(process("planted", "g"))]));
        assert_eq!(names(&processes, &planted, &anyone, 0), ["planted"]);
        // ...to a caller whose reach takes in the group only,
        let mut other = Caller::unrestricted("other");
        other.groups = Groups::Only(parse_group_patterns("h").expect("patterns"));
        assert!(names(&processes, &planted, &other, 0).is_empty());
        // ...until the group changes; a change elsewhere is no change of it.
        runtime.table().upsert(process("x", "h"));
        assert_eq!(names(&processes, &planted, &anyone, 0), ["planted"]);
        runtime.table().upsert(process("c", "g"));
        assert_eq!(names(&processes, &planted, &anyone, 0), ["a", "b", "c"]);
        assert_eq!(names(&processes, &planted, &anyone, 0), ["a", "b", "c"], "kept again");
        // A page too small for the kept answer is made afresh.
        assert_eq!(names(&processes, &planted, &anyone, 2), ["a", "b"]);
    }
}
