//! The server's conversions to the wire: the shared ones of [`hydroplane_core::convert`]
//! (re-exported here, so handlers import one module), and those of the server's own types, its
//! watch events.

pub use hydroplane_core::convert::*;

use crate::proto;
use crate::table::{ChangeKind, WatchEvent};

/// Converts a watch event into its wire form.
pub fn watch_event_to_proto(event: WatchEvent) -> proto::WatchEvent {
    let r#type = watch_event_type(&event).into();
    match event {
        WatchEvent::Change(change) => proto::WatchEvent {
            r#type,
            process: Some(info_to_proto(&change.process)),
            revision: change.revision,
        },
        WatchEvent::Synced { revision } | WatchEvent::Reset { revision } => {
            proto::WatchEvent { r#type, process: None, revision }
        }
    }
}

/// What a watch event is, on the wire.
pub fn watch_event_type(event: &WatchEvent) -> proto::WatchEventType {
    use proto::WatchEventType as Type;
    match event {
        WatchEvent::Change(change) => match change.kind {
            ChangeKind::Added => Type::Added,
            ChangeKind::Modified => Type::Modified,
            ChangeKind::Deleted => Type::Deleted,
        },
        WatchEvent::Synced { .. } => Type::Synced,
        WatchEvent::Reset { .. } => Type::Reset,
    }
}
