"""The official Python `kubernetes` client against kube-sim.

Run by python_client.rs as: python python_client.py KUBECONFIG BASE_URL
Lists, creates, watches with resume from a resourceVersion, patches pod status, pages with
limit/continue, and expects 410 Gone when resuming from a version the server has forgotten.
Prints OK on success; any failure raises.
"""

import json
import sys
import urllib.request

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def admin(base_url, body):
    request = urllib.request.Request(
        base_url + "/_sim/faults",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def pod(name, app):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
    }


def main():
    kubeconfig, base_url = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    start = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod("py-a", "py"))

    # Resume from the version of the first list: the creation is replayed.
    added_version = None
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=10):
        if event["type"] == "ADDED" and event["object"].metadata.name == "py-a":
            added_version = event["object"].metadata.resource_version
            stream.stop()
    assert added_version, "the watch replayed the creation"

    # A status patch, as a test drives pod phases, seen by a watch resumed after the ADDED.
    core.patch_namespaced_pod_status(
        "py-a",
        "default",
        {"status": {"phase": "Failed", "containerStatuses": [{
            "name": "main", "image": "nginx:1.27", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error"}},
        }]}},
    )
    seen_failed = False
    stream = watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, "default", resource_version=added_version, timeout_seconds=10):
        if event["type"] == "MODIFIED" and event["object"].status.phase == "Failed":
            terminated = event["object"].status.container_statuses[0].state.terminated
            assert terminated.exit_code == 3, terminated
            seen_failed = True
            stream.stop()
    assert seen_failed, "the resumed watch saw the status change"

    # Paging and selectors.
    for index in range(5):
        core.create_namespaced_pod("default", pod("py-page-%d" % index, "page"))
    names = []
    token = None
    while True:
        page = core.list_namespaced_pod("default", label_selector="app=page", limit=2, _continue=token)
        names += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert names == ["py-page-%d" % i for i in range(5)], names

    # Errors are ApiExceptions with the Status body.
    try:
        core.read_namespaced_pod("missing", "default")
        raise AssertionError("reading a missing pod succeeded")
    except ApiException as error:
        assert error.status == 404, error
        assert json.loads(error.body)["reason"] == "NotFound"

    # After the server forgets its history, resuming from `start` is 410 Gone.
    admin(base_url, {"force_gone": True})
    try:
        for event in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=5):
            if event["type"] == "ERROR":
                assert event["raw_object"]["code"] == 410, event
                break
        else:
            raise AssertionError("no 410 for a forgotten resourceVersion")
    except ApiException as error:
        assert error.status == 410, error

    core.delete_collection_namespaced_pod("default", label_selector="app in (py,page)")
    assert core.list_namespaced_pod("default").items == []
    print("OK")


if __name__ == "__main__":
    main()
