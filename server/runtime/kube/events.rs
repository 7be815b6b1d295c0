//! The core/v1 Events of a process's Pod and of its StatefulSet or Job, which explain its state
//! (FailedScheduling, BackOff, Killing, a controller's SuccessfulCreate of a Pod it made again,
//! ...): the list's field selector and what one Event tells Describe. Pure; the call is the
//! runtime's.

use k8s_openapi::api::core::v1::Event;

use crate::runtime::RuntimeEvent;

/// The field selector of the Events about the `kind` object `name` (a Pod, a StatefulSet, a
/// Job), and only its current incarnation (`uid`) when known: a process started again under the
/// same name must not show the events of the objects before it.
pub fn field_selector(kind: &str, name: &str, uid: Option<&str>) -> String {
    let mut selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    if let Some(uid) = uid.filter(|uid| !uid.is_empty()) {
        selector.push_str(",involvedObject.uid=");
        selector.push_str(uid);
    }
    selector
}

/// The Events as Describe shows them: oldest first, and those of the same moment (Kubernetes
/// times most to the second) in the order the cluster recorded them, which is the order of
/// their `resourceVersion`s (a list answers in name order, and Events are named at random).
pub fn in_order(events: Vec<Event>) -> Vec<RuntimeEvent> {
    let mut keyed: Vec<(u64, RuntimeEvent)> = events
        .into_iter()
        .filter_map(|event| {
            // Opaque by contract, an etcd revision in practice; one that is not a number sorts
            // first among its equals, in list order (the sort is stable).
            let version = event.metadata.resource_version.as_deref().and_then(|version| version.parse().ok());
            Some((version.unwrap_or(0), event_of(event)?))
        })
        .collect();
    keyed.sort_by_key(|(version, event)| (event.time, *version));
    keyed.into_iter().map(|(_, event)| event).collect()
}

/// What an Event tells of its Pod, timed when it last happened (clusters fill in different
/// fields: `lastTimestamp` for core/v1 recorders, `eventTime` for events.k8s.io ones); `None`
/// for an Event with no time at all, which cannot be placed in a history.
pub fn event_of(event: Event) -> Option<RuntimeEvent> {
    let time = event
        .last_timestamp
        .map(|time| time.0)
        .or(event.event_time.map(|time| time.0))
        .or(event.first_timestamp.map(|time| time.0))
        .or(event.metadata.creation_timestamp.map(|time| time.0))?;
    Some(RuntimeEvent { time, reason: event.reason, message: event.message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    #[test]
    fn events_of_one_second_keep_the_order_the_cluster_made_them_in() {
        let recorded = |reason: &str, second: i64, version: &str| Event {
            reason: Some(reason.to_owned()),
            last_timestamp: Some(Time(jiff::Timestamp::from_second(second).expect("a time"))),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                resource_version: Some(version.to_owned()),
                ..Default::default()
            },
            ..Event::default()
        };
        // As a list answers them: by name, which is random.
        let listed = vec![
            recorded("Started", 10, "904"),
            recorded("Created", 10, "903"),
            recorded("Pulled", 10, "902"),
            recorded("Scheduled", 9, "900"),
            recorded("Pulling", 10, "901"),
        ];
        let reasons: Vec<String> = in_order(listed).into_iter().filter_map(|event| event.reason).collect();
        assert_eq!(reasons, ["Scheduled", "Pulling", "Pulled", "Created", "Started"]);
    }

    #[test]
    fn the_selector_names_the_pod_and_its_uid() {
        assert_eq!(field_selector("Pod", "web", None), "involvedObject.kind=Pod,involvedObject.name=web");
        assert_eq!(
            field_selector("StatefulSet", "web", Some("u-1")),
            "involvedObject.kind=StatefulSet,involvedObject.name=web,involvedObject.uid=u-1"
        );
        assert_eq!(field_selector("Pod", "web", Some("")), "involvedObject.kind=Pod,involvedObject.name=web");
    }

    #[test]
    fn an_event_is_timed_by_its_last_occurrence() {
        let at = |second| jiff::Timestamp::from_second(second).expect("a time");
        let event = Event {
            reason: Some("BackOff".into()),
            message: Some("Back-off restarting failed container".into()),
            first_timestamp: Some(Time(at(10))),
            last_timestamp: Some(Time(at(20))),
            ..Event::default()
        };
        let seen = event_of(event).expect("an event with a time");
        assert_eq!(seen.time, at(20));
        assert_eq!(seen.reason.as_deref(), Some("BackOff"));
        let recorded = Event { event_time: Some(MicroTime(at(30))), ..Event::default() };
        assert_eq!(event_of(recorded).map(|event| event.time), Some(at(30)));
        assert_eq!(event_of(Event::default()), None, "no time: no place in the history");
    }
}
