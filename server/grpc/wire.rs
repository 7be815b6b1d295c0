//! Answers (List pages and Watch events) encoded straight from the table's shared entries. A `proto::ListResponse` owns its
//! processes, so building one copies every string of every process on the page and frees them
//! again once sent: most of a List's CPU, and more the larger the server's heap (a group of 100
//! among 150,000 processes cost more than the same 100 alone). [`ListReply`] holds the page's
//! `Arc<ProcessInfo>`s and writes `hydroplane.v1.ListResponse` from them with no copy. Its bytes
//! are the ones prost writes for the converted message (`convert::info_to_proto`), field for
//! field, which the tests check.

use std::sync::{Arc, OnceLock};

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::grpc::convert;
use crate::proto;
use crate::spec::{ProcessInfo, SocketAddress};
use crate::table::WatchEvent;

/// The decoding half of `Message` for the encode-only types here: what a decode reads is
/// skipped (decode the `proto` types instead).
macro_rules! skip_decoding {
    () => {
        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: WireType,
            buf: &mut impl Buf,
            ctx: DecodeContext,
        ) -> Result<(), DecodeError> {
            encoding::skip_field(wire_type, tag, buf, ctx)
        }
    };
}

/// One page of a List, as it goes on the wire (fixed once made: the lengths are kept).
/// Encode-only: decoding one keeps nothing.
#[derive(Debug, Default)]
pub struct ListReply {
    /// The page's processes.
    entries: Entries,
    /// Why the answer may be stale, if it may.
    stale_reason: Option<String>,
    /// The token of the next page, if there is one.
    next_page_token: Option<String>,
    /// The revision the listing shows.
    revision: u64,
}

/// The processes of a [`ListReply`].
#[derive(Debug)]
enum Entries {
    /// Shared with the table, encoded as the answer is written.
    Shared {
        processes: Vec<Arc<ProcessInfo>>,
        /// Each process's encoded length, worked out once: the codec asks for the reply's
        /// length before it writes it, and each process is prefixed with its own.
        lengths: OnceLock<Vec<usize>>,
    },
    /// Already encoded ([`encode_processes`]): a group's answer kept for the next List of it.
    Encoded(Bytes),
}

impl Default for Entries {
    fn default() -> Entries {
        Entries::Encoded(Bytes::new())
    }
}

impl Entries {
    fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Entries::Shared { processes, lengths } => {
                encode_all(processes, lengths_of(processes, lengths), buf)
            }
            Entries::Encoded(bytes) => buf.put_slice(bytes),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Entries::Shared { processes, lengths } => all_len(lengths_of(processes, lengths)),
            Entries::Encoded(bytes) => bytes.len(),
        }
    }
}

/// The encoded length of each process, in order, worked out on the first call.
fn lengths_of<'a>(processes: &[Arc<ProcessInfo>], lengths: &'a OnceLock<Vec<usize>>) -> &'a [usize] {
    lengths.get_or_init(|| info_lengths(processes))
}

/// The encoded length of each process, in order.
fn info_lengths(processes: &[Arc<ProcessInfo>]) -> Vec<usize> {
    processes.iter().map(|process| Info(process).encoded_len()).collect()
}

/// `processes`, each with its encoded length, as the `processes` fields of a List answer.
fn encode_all(processes: &[Arc<ProcessInfo>], lengths: &[usize], buf: &mut impl BufMut) {
    for (process, length) in processes.iter().zip(lengths) {
        encode_info(1, process, *length, buf);
    }
}

/// The length [`encode_all`] writes.
fn all_len(lengths: &[usize]) -> usize {
    lengths.iter().map(|length| info_field_len(1, *length)).sum()
}

/// `processes` as the `processes` fields of a `hydroplane.v1.ListResponse`, for
/// [`ListReply::encoded`].
pub fn encode_processes(processes: &[Arc<ProcessInfo>]) -> Bytes {
    let lengths = info_lengths(processes);
    let mut bytes = Vec::with_capacity(all_len(&lengths));
    encode_all(processes, &lengths, &mut bytes);
    bytes.into()
}

impl ListReply {
    /// The answer with `processes`, `stale_reason`, `next_page_token` and `revision`.
    pub fn new(
        processes: Vec<Arc<ProcessInfo>>,
        stale_reason: Option<String>,
        next_page_token: Option<String>,
        revision: u64,
    ) -> ListReply {
        let entries = Entries::Shared { processes, lengths: OnceLock::new() };
        ListReply { entries, stale_reason, next_page_token, revision }
    }

    /// A one-page answer whose processes are already encoded ([`encode_processes`]).
    pub fn encoded(processes: Bytes, stale_reason: Option<String>, revision: u64) -> ListReply {
        ListReply { entries: Entries::Encoded(processes), stale_reason, next_page_token: None, revision }
    }

    /// The same answer as an owned message (for in-process callers of the service trait).
    pub fn into_proto(self) -> proto::ListResponse {
        let processes = match self.entries {
            Entries::Shared { processes, .. } => {
                processes.iter().map(|process| convert::info_to_proto(process)).collect()
            }
            // Made by `encode_processes` from the same processes, so it decodes; an empty
            // list would be the server's mistake, not the caller's.
            Entries::Encoded(bytes) => {
                proto::ListResponse::decode(bytes).map(|reply| reply.processes).unwrap_or_default()
            }
        };
        proto::ListResponse {
            processes,
            stale_reason: self.stale_reason,
            next_page_token: self.next_page_token,
            revision: self.revision,
        }
    }
}

impl Message for ListReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.entries.encode(buf);
        if let Some(reason) = &self.stale_reason {
            encoding::string::encode(2, reason, buf);
        }
        if let Some(token) = &self.next_page_token {
            encoding::string::encode(3, token, buf);
        }
        if self.revision != 0 {
            encoding::uint64::encode(4, &self.revision, buf);
        }
    }

    skip_decoding!();

    fn encoded_len(&self) -> usize {
        self.entries.encoded_len()
            + self.stale_reason.as_ref().map_or(0, |reason| encoding::string::encoded_len(2, reason))
            + self.next_page_token.as_ref().map_or(0, |token| encoding::string::encoded_len(3, token))
            + if self.revision != 0 { encoding::uint64::encoded_len(4, &self.revision) } else { 0 }
    }

    fn clear(&mut self) {
        *self = ListReply::default();
    }
}

/// One Watch event, as it goes on the wire: its process is encoded from the entry the table
/// shares with every watcher, where a `proto::WatchEvent` would copy it for each of them.
/// Encode-only: decoding one keeps nothing.
#[derive(Debug)]
pub struct WatchReply {
    event: WatchEvent,
    /// The process, encoded once for every watcher of the change ([`shared_encoding`]): the
    /// codec asks for the reply's length before it writes it, and the process is prefixed
    /// with its own.
    process: OnceLock<Bytes>,
}

impl WatchReply {
    /// `event` as it goes on the wire.
    pub fn new(event: WatchEvent) -> WatchReply {
        WatchReply { event, process: OnceLock::new() }
    }

    /// The same event as an owned message (for in-process callers of the service trait).
    pub fn into_proto(self) -> proto::WatchEvent {
        convert::watch_event_to_proto(self.event)
    }

    /// The process (encoded) and revision of the event.
    fn parts(&self) -> (Option<&Bytes>, u64) {
        match &self.event {
            WatchEvent::Change(change) => {
                (Some(self.process.get_or_init(|| shared_encoding(&change.process))), change.revision)
            }
            WatchEvent::Synced { revision } | WatchEvent::Reset { revision } => (None, *revision),
        }
    }
}

impl Message for WatchReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let r#type = convert::watch_event_type(&self.event) as i32;
        if r#type != 0 {
            encoding::int32::encode(1, &r#type, buf);
        }
        let (process, revision) = self.parts();
        if let Some(process) = process {
            encoding::bytes::encode(2, process, buf);
        }
        if revision != 0 {
            encoding::uint64::encode(3, &revision, buf);
        }
    }

    skip_decoding!();

    fn encoded_len(&self) -> usize {
        let r#type = convert::watch_event_type(&self.event) as i32;
        let (process, revision) = self.parts();
        (if r#type != 0 { encoding::int32::encoded_len(1, &r#type) } else { 0 })
            + process.map_or(0, |process| encoding::bytes::encoded_len(2, process))
            + if revision != 0 { encoding::uint64::encoded_len(3, &revision) } else { 0 }
    }

    fn clear(&mut self) {}
}

thread_local! {
    /// The process of the last Watch event encoded on this thread, and its encoding. A change
    /// goes out to every watcher from the one event loop thread, one after the other, so the
    /// rest of them write these bytes instead of encoding the same process again. Holding the
    /// `Arc` keeps its address from being reused by another process while it is here.
    static LAST_ENCODED: std::cell::RefCell<Option<(Arc<ProcessInfo>, Bytes)>> =
        const { std::cell::RefCell::new(None) };
}

/// `process` encoded as `hydroplane.v1.ProcessInfo` (no key or length), shared with the other
/// watchers of the same change.
fn shared_encoding(process: &Arc<ProcessInfo>) -> Bytes {
    LAST_ENCODED.with_borrow_mut(|last| {
        if let Some((kept, bytes)) = last.as_ref()
            && Arc::ptr_eq(kept, process)
        {
            return bytes.clone();
        }
        let info = Info(process);
        let mut encoded = Vec::with_capacity(info.encoded_len());
        info.encode_raw(&mut encoded);
        let bytes = Bytes::from(encoded);
        *last = Some((Arc::clone(process), bytes.clone()));
        bytes
    })
}

/// A process as the field `tag`, its encoded `length` already known.
fn encode_info(tag: u32, process: &ProcessInfo, length: usize, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(length as u64, buf);
    Info(process).encode_raw(buf);
}

/// The length [`encode_info`] writes.
fn info_field_len(tag: u32, length: usize) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(length as u64) + length
}

/// A string field, as prost writes a `String` (whose encoder takes nothing else).
fn encode_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

/// The length [`encode_str`] writes.
fn str_len(tag: u32, value: &str) -> usize {
    encoding::key_len(tag) + encoding::encoded_len_varint(value.len() as u64) + value.len()
}

/// A process as `hydroplane.v1.ProcessInfo`, borrowed.
struct Info<'a>(&'a ProcessInfo);

impl Info<'_> {
    /// `status` as the wire's enum number.
    fn status(&self) -> i32 {
        convert::status_to_proto(self.0.status) as i32
    }

    /// `created` as the wire's Timestamp.
    fn created(&self) -> prost_types::Timestamp {
        convert::timestamp_to_proto(self.0.created)
    }
}

impl Message for Info<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let info = self.0;
        if !info.process_name.is_empty() {
            encode_str(1, &info.process_name, buf);
        }
        if let Some(group) = &info.group {
            encode_str(2, group, buf);
        }
        for address in &info.socket_addresses {
            encoding::message::encode(3, &Address(address), buf);
        }
        encoding::message::encode(4, &self.created(), buf);
        let status = self.status();
        if status != 0 {
            encoding::int32::encode(5, &status, buf);
        }
        if let Some(reason) = &info.reason {
            encode_str(6, reason, buf);
        }
        if let Some(message) = &info.message {
            encoding::string::encode(7, message, buf);
        }
        if info.restart_count != 0 {
            encoding::uint32::encode(8, &info.restart_count, buf);
        }
        if let Some(code) = &info.exit_code {
            encoding::int32::encode(9, code, buf);
        }
        if let Some(node) = &info.node {
            encode_str(10, node, buf);
        }
        encoding::btree_map::encode(
            encoding::string::encode,
            encoding::string::encoded_len,
            encoding::string::encode,
            encoding::string::encoded_len,
            11,
            &info.labels,
            buf,
        );
    }

    skip_decoding!();

    fn encoded_len(&self) -> usize {
        let info = self.0;
        let status = self.status();
        let optional = |tag: u32, value: Option<&str>| value.map_or(0, |value| str_len(tag, value));
        (if info.process_name.is_empty() { 0 } else { str_len(1, &info.process_name) })
            + optional(2, info.group.as_deref())
            + info
                .socket_addresses
                .iter()
                .map(|address| encoding::message::encoded_len(3, &Address(address)))
                .sum::<usize>()
            + encoding::message::encoded_len(4, &self.created())
            + if status != 0 { encoding::int32::encoded_len(5, &status) } else { 0 }
            + optional(6, info.reason.as_deref())
            + optional(7, info.message.as_deref())
            + if info.restart_count != 0 { encoding::uint32::encoded_len(8, &info.restart_count) } else { 0 }
            + info.exit_code.as_ref().map_or(0, |code| encoding::int32::encoded_len(9, code))
            + optional(10, info.node.as_deref())
            + encoding::btree_map::encoded_len(
                encoding::string::encoded_len,
                encoding::string::encoded_len,
                11,
                &info.labels,
            )
    }

    fn clear(&mut self) {}
}

/// An address as `hydroplane.v1.SocketAddress`, borrowed.
struct Address<'a>(&'a SocketAddress);

impl Message for Address<'_> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let address = self.0;
        if !address.host.is_empty() {
            encode_str(1, &address.host, buf);
        }
        if address.port != 0 {
            encoding::uint32::encode(2, &u32::from(address.port), buf);
        }
        if address.is_public {
            encoding::bool::encode(3, &address.is_public, buf);
        }
        if let Some(name) = &address.dns_name {
            encoding::string::encode(4, name, buf);
        }
    }

    skip_decoding!();

    fn encoded_len(&self) -> usize {
        let address = self.0;
        (if address.host.is_empty() { 0 } else { str_len(1, &address.host) })
            + if address.port != 0 { encoding::uint32::encoded_len(2, &u32::from(address.port)) } else { 0 }
            + if address.is_public { encoding::bool::encoded_len(3, &address.is_public) } else { 0 }
            + address.dns_name.as_ref().map_or(0, |name| encoding::string::encoded_len(4, name))
    }

    fn clear(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessStatus;
    use std::collections::BTreeMap;

    fn process(name: &str) -> ProcessInfo {
        ProcessInfo::of_tests(name, None, ProcessStatus::Starting)
    }

    /// Processes with every field unset, set, zero, negative, long and non-ASCII.
    fn variety() -> Vec<Arc<ProcessInfo>> {
        let labels: BTreeMap<String, String> = [
            ("tier".to_owned(), "web".to_owned()),
            ("example.com/team".to_owned(), "ünïcode".to_owned()),
            ("empty".to_owned(), String::new()),
        ]
        .into();
        let full = ProcessInfo {
            process_name: "a-long-name-".repeat(20).into(),
            group: Some("group".into()),
            socket_addresses: vec![
                SocketAddress { host: "10.96.0.1".into(), port: 80, is_public: false, dns_name: None },
                SocketAddress {
                    host: "203.0.113.9".into(),
                    port: 65535,
                    is_public: true,
                    dns_name: Some("web.default.svc.cluster.local".to_owned()),
                },
                SocketAddress {
                    host: Default::default(),
                    port: 0,
                    is_public: false,
                    dns_name: Some(String::new()),
                },
            ],
            created: jiff::Timestamp::new(1_796_460_000, 123_456_789).unwrap(),
            status: ProcessStatus::Failed,
            reason: Some("CrashLoopBackOff".into()),
            message: Some("x".repeat(300)),
            restart_count: 7,
            exit_code: Some(-1),
            node: Some("node-1".into()),
            labels: Arc::new(labels),
        };
        let mut before_epoch = process("before");
        before_epoch.created = jiff::Timestamp::new(-5, 500).unwrap();
        before_epoch.status = ProcessStatus::Exited;
        before_epoch.exit_code = Some(0);
        before_epoch.group = Some(Default::default());
        let statuses = [ProcessStatus::Running, ProcessStatus::Stopping]
            .into_iter()
            .map(|status| ProcessInfo { status, ..process("status") });
        [process(""), process("plain"), full, before_epoch]
            .into_iter()
            .chain(statuses)
            .map(Arc::new)
            .collect()
    }

    #[test]
    fn a_reply_is_byte_for_byte_what_prost_writes_for_the_converted_message() {
        let processes = variety();
        for (stale_reason, next_page_token, revision) in [
            (None, None, 0),
            (Some("the index of the cluster is still syncing".to_owned()), Some("dG9rZW4".to_owned()), 42),
            (Some(String::new()), Some(String::new()), u64::MAX),
        ] {
            for count in [0, 1, processes.len()] {
                let reply = ListReply::new(
                    processes[..count].to_vec(),
                    stale_reason.clone(),
                    next_page_token.clone(),
                    revision,
                );
                let encoded = reply.encode_to_vec();
                assert_eq!(encoded.len(), reply.encoded_len());
                let expected = reply.into_proto();
                assert_eq!(encoded, expected.encode_to_vec(), "{count} processes, revision {revision}");
                assert_eq!(proto::ListResponse::decode(encoded.as_slice()).unwrap(), expected);
                if next_page_token.is_none() {
                    // The same answer from processes encoded beforehand (a kept group answer).
                    let kept = encode_processes(&processes[..count]);
                    let reply = ListReply::encoded(kept, stale_reason.clone(), revision);
                    assert_eq!(
                        (reply.encode_to_vec(), reply.encoded_len()),
                        (encoded.clone(), encoded.len())
                    );
                    assert_eq!(reply.into_proto(), expected);
                }
            }
        }
    }

    #[test]
    fn a_watch_event_is_byte_for_byte_what_prost_writes_for_the_converted_message() {
        let table = crate::table::ProcessTable::new(0, 100);
        let mut events = vec![WatchEvent::Synced { revision: 0 }, WatchEvent::Reset { revision: u64::MAX }];
        for process in variety() {
            events.extend(table.upsert((*process).clone()).map(WatchEvent::Change));
        }
        events.extend(
            table
                .upsert(ProcessInfo { status: ProcessStatus::Running, ..process("plain") })
                .map(WatchEvent::Change),
        );
        events.extend(table.remove("plain").map(WatchEvent::Change));
        assert_eq!(events.len(), 2 + variety().len() + 2, "every upsert and the removal made a change");
        for event in events {
            let (reply, other_watchers) = (WatchReply::new(event.clone()), WatchReply::new(event));
            let encoded = reply.encode_to_vec();
            assert_eq!(encoded.len(), reply.encoded_len());
            // Another watcher of the change writes the same bytes, from the same encoding.
            assert_eq!(other_watchers.encode_to_vec(), encoded);
            if let (Some(first), Some(second)) = (reply.parts().0, other_watchers.parts().0) {
                assert_eq!(first.as_ptr(), second.as_ptr(), "the process was encoded once");
            }
            let expected = reply.into_proto();
            assert_eq!(encoded, expected.encode_to_vec(), "{expected:?}");
            assert_eq!(proto::WatchEvent::decode(encoded.as_slice()).unwrap(), expected);
        }
    }
}
