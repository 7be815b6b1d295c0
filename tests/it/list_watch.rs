//! List then Watch over gRPC against the real server, on the local runtime and on Kubernetes
//! (kube-sim): a listing read in small pages while the table changes shows every process once,
//! at one revision; a Watch from the listing's revision sends exactly the changes made after it,
//! each once, then SYNCED. And (local runtime) page tokens that expired or that do not belong to
//! the request get the documented errors.

use std::collections::BTreeSet;

use hydroplane::proto::process_service_client::ProcessServiceClient;
use hydroplane::proto::{self, WatchEventType};
use hydroplane_client::{Client, ConnectOptions};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::requests::{sleeper, start_request, start_waiting, stop_process};
use crate::common::watch::{Watch, describe};
use crate::common::{KubeSim, Server};

/// How many listings the server keeps at most (`table::listing::MAX_LISTINGS`, documented on
/// `ListRequest.page_token` as "a bounded number").
const MAX_LISTINGS: usize = 256;

/// One page of the listing of everything.
async fn page(
    client: &mut ProcessServiceClient<Channel>,
    size: u32,
    token: Option<String>,
) -> Result<proto::ListResponse, tonic::Status> {
    let request = proto::ListRequest { page_size: size, page_token: token, ..proto::ListRequest::default() };
    client.list(request).await.map(tonic::Response::into_inner)
}

/// An event as (type, process, revision), to compare streams.
fn key(event: &proto::WatchEvent) -> (String, u64) {
    (describe(event), event.revision)
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_between_the_list_and_the_watch_arrive_exactly_once_on_the_local_runtime() {
    changes_between_the_list_and_the_watch_arrive_exactly_once(&Server::start()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_between_the_list_and_the_watch_arrive_exactly_once_on_kubernetes() {
    let sim = KubeSim::start(&[]);
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(""));
    changes_between_the_list_and_the_watch_arrive_exactly_once(&server).await;
}

/// The scenario, on whichever runtime `server` runs.
async fn changes_between_the_list_and_the_watch_arrive_exactly_once(server: &Server) {
    let mut client = server.client().await;
    let names: Vec<String> = (0..7).map(|index| format!("p-{index}")).collect();
    for name in &names {
        // Running before the listing, so that nothing of theirs changes but what the test does.
        client.start(start_waiting(sleeper(name))).await.expect("start");
    }
    // Every change, as a reference for what a Watch from the listing's revision must replay.
    let mut everything = Watch::all(&mut client).await;
    everything.until_synced().await;

    // The listing, two at a time, while processes come and go between its pages.
    let first = page(&mut client, 2, None).await.expect("the first page");
    let revision = first.revision;
    let mut listed: Vec<String> =
        first.processes.iter().map(|process| process.process_name.clone()).collect();
    let mut token = first.next_page_token;
    let mut change = 0;
    while let Some(next) = token {
        match change {
            0 => {
                client.start(start_request(sleeper("p-2a"))).await.expect("start p-2a");
            }
            1 => {
                client.stop(stop_process("p-5")).await.expect("stop p-5");
            }
            _ => {
                client.start(start_request(sleeper("a-new"))).await.expect("start a-new");
            }
        }
        change += 1;
        let response = page(&mut client, 2, Some(next)).await.expect("a later page");
        assert_eq!(response.revision, revision, "every page shows the listing's revision");
        assert!(response.processes.len() <= 2, "{response:?}");
        listed.extend(response.processes.into_iter().map(|process| process.process_name));
        token = response.next_page_token;
    }
    assert_eq!(listed, names, "every process of the listing once, as it was at its revision");
    assert_eq!(change, 3, "four pages of 2");

    // More changes after the last page; the reference watch records everything up to them.
    client.stop(stop_process("p-1")).await.expect("stop p-1");
    let mut recorded: Vec<proto::WatchEvent> = Vec::new();
    let awaited = ["ADDED p-2a", "ADDED a-new", "DELETED p-5", "DELETED p-1"];
    while !awaited.iter().all(|wanted| recorded.iter().any(|event| describe(event).starts_with(wanted))) {
        recorded.push(everything.next().await);
    }

    // A watch from the listing's revision: exactly the changes after it, then SYNCED.
    let request = proto::WatchRequest { since_revision: Some(revision), ..proto::WatchRequest::default() };
    let mut since = Watch::open(&mut client, request).await;
    let replayed = since.until_synced().await;
    let replayed_to = replayed.last().map_or(revision, |event| event.revision);
    // The reference may be behind the replay's end (a process still starting): it catches up on
    // events, never by waiting a fixed time.
    while recorded.last().is_none_or(|event| event.revision < replayed_to) {
        recorded.push(everything.next().await);
    }
    let reference: Vec<(String, u64)> = recorded
        .iter()
        .filter(|event| event.revision > revision && event.revision <= replayed_to)
        .map(key)
        .collect();
    let replayed_keys: Vec<(String, u64)> = replayed.iter().map(key).collect();
    assert!(!replayed_keys.is_empty());
    assert_eq!(replayed_keys, reference, "the replay is what happened after the listing, in order");
    let revisions: Vec<u64> = replayed.iter().map(|event| event.revision).collect();
    assert!(revisions.windows(2).all(|pair| pair[0] < pair[1]), "each change once: {revisions:?}");
    assert!(
        revisions.iter().all(|&event_revision| event_revision > revision),
        "nothing from the listing again"
    );
    let touched: BTreeSet<&str> = replayed
        .iter()
        .filter_map(|event| event.process.as_ref())
        .map(|process| process.process_name.as_str())
        .collect();
    assert_eq!(
        touched,
        BTreeSet::from(["a-new", "p-1", "p-2a", "p-5"]),
        "only what changed after the listing"
    );
    for (kind, name) in [
        (WatchEventType::Added, "p-2a"),
        (WatchEventType::Added, "a-new"),
        (WatchEventType::Deleted, "p-5"),
        (WatchEventType::Deleted, "p-1"),
    ] {
        let count = replayed
            .iter()
            .filter(|event| {
                event.r#type() == kind
                    && event.process.as_ref().is_some_and(|process| process.process_name == name)
            })
            .count();
        assert_eq!(
            count,
            1,
            "{kind:?} {name} once in {:?}",
            replayed.iter().map(describe).collect::<Vec<_>>()
        );
    }

    // And it goes on live with no gap.
    client.stop(stop_process("p-3")).await.expect("stop p-3");
    since.until_process("p-3", "deleted", |kind, _| kind == WatchEventType::Deleted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_tokens_that_expired_or_belong_elsewhere_get_the_documented_errors() {
    let server = Server::start();
    let mut client = server.client().await;
    for name in ["a", "b", "c"] {
        let mut spec = sleeper(name);
        spec["group"] = "g".into();
        spec["labels"] = serde_json::json!({"tier": "web"});
        client.start(start_request(spec)).await.expect("start");
    }

    // Another request's filters with a token: INVALID_ARGUMENT, naming the listing's.
    let token = page(&mut client, 1, None).await.expect("a first page").next_page_token.expect("a token");
    for request in [
        proto::ListRequest { group: Some("g".into()), ..Default::default() },
        proto::ListRequest { label_selector: Some("tier=web".into()), ..Default::default() },
    ] {
        let request = proto::ListRequest { page_size: 1, page_token: Some(token.clone()), ..request };
        let status = client.list(request).await.expect_err("other filters");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("page_token"), "{status:?}");
    }
    // A made-up token: INVALID_ARGUMENT.
    for made_up in ["not-a-token", "AAAA", &"A".repeat(100)] {
        let status = page(&mut client, 1, Some(made_up.to_owned())).await.expect_err("made up");
        assert_eq!(status.code(), Code::InvalidArgument, "{made_up}: {status:?}");
    }
    // One made up in the server's own shape names a listing the server does not keep, which it
    // cannot tell from one that expired: list again.
    let shaped = "A".repeat(38);
    let status = page(&mut client, 1, Some(shaped)).await.expect_err("unknown listing");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // The token still works with its own filters.
    page(&mut client, 1, Some(token.clone())).await.expect("the token is good");

    // The server keeps a bounded number of listings: as many newer ones push the first out, and
    // its token is FAILED_PRECONDITION, saying to list again.
    let expiring = page(&mut client, 1, None).await.expect("a first page");
    let expiring_token = expiring.next_page_token.expect("a token");
    let mut newest = None;
    for _ in 0..MAX_LISTINGS {
        newest = page(&mut client, 1, None).await.expect("a first page").next_page_token;
    }
    let status = page(&mut client, 1, Some(expiring_token)).await.expect_err("expired");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("list again from the first page"), "{status:?}");
    assert!(status.message().contains(&format!("revision {}", expiring.revision)), "{status:?}");
    let newest = page(&mut client, 1, newest).await.expect("the newest listing is kept");
    assert_eq!(newest.processes[0].process_name, "b");

    // The client crate lists again by itself, and assembles the pages.
    let options = ConnectOptions::new(&server.url()).expect("url");
    let typed = Client::connect(options).await.expect("connect");
    let listing = typed
        .list(proto::ListRequest {
            page_size: 1,
            label_selector: Some("tier=web".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    let names: Vec<&str> = listing.processes.iter().map(|process| process.process_name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
}
