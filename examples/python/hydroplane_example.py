#!/usr/bin/env python3
"""A small Hydroplane client in Python: starts a process, lists it, watches it and stops it.

The gRPC stubs are generated from ../../proto with grpcio-tools on first use (into
./generated, git-ignored), so the proto files are the only source of truth:

    python3 -m venv .venv && .venv/bin/pip install -r examples/python/requirements.txt
    .venv/bin/python examples/python/hydroplane_example.py --server 127.0.0.1:50051

It runs `python3 -m http.server` as a Hydroplane process on the local runtime, fetches a page
from the address the server reports, and exits non-zero with a message if anything is off.
"""

import argparse
import pathlib
import socket
import sys
import threading
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GENERATED = HERE / "generated"


def load_stubs():
    """Generates the stubs when they are missing or older than the proto, then imports them."""
    proto = PROTO_ROOT / "hydroplane" / "v1" / "process.proto"
    marker = GENERATED / "hydroplane" / "v1" / "process_pb2_grpc.py"
    if not marker.exists() or marker.stat().st_mtime < proto.stat().st_mtime:
        import grpc_tools
        from grpc_tools import protoc

        GENERATED.mkdir(exist_ok=True)
        well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
        code = protoc.main([
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={GENERATED}",
            f"--grpc_python_out={GENERATED}",
            str(proto),
        ])
        if code != 0:
            sys.exit(f"cannot generate the gRPC stubs from {proto}")
    sys.path.insert(0, str(GENERATED))
    from hydroplane.v1 import process_pb2, process_pb2_grpc

    return process_pb2, process_pb2_grpc


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="the server's host:port")
    parser.add_argument("--name", default="python-example", help="the process name to use")
    args = parser.parse_args()

    import grpc

    pb, pb_grpc = load_stubs()
    channel = grpc.insecure_channel(args.server)
    client = pb_grpc.ProcessServiceStub(channel)

    # Watch from the start, in the background, to see the process come and go.
    events = []
    deleted = threading.Event()
    watch = client.Watch(pb.WatchRequest(process_name=args.name))

    def follow():
        try:
            for event in watch:
                events.append(event)
                if event.type == pb.WATCH_EVENT_TYPE_DELETED:
                    deleted.set()
                    return
        except grpc.RpcError:
            pass

    threading.Thread(target=follow, daemon=True).start()

    port = free_port()
    spec = pb.ProcessSpec(
        process_name=args.name,
        container=pb.ContainerSpec(
            image_uri="python:3.11",
            command=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            ports=[pb.PortMapping(container_port=port, protocol="tcp")],
        ),
    )
    started = client.Start(pb.StartRequest(spec=spec, wait=True))
    if started.process.status != pb.PROCESS_STATUS_RUNNING:
        sys.exit(f"the process did not start: {started.process}")
    address = started.process.socket_addresses[0]
    page = urllib.request.urlopen(f"http://{address.host}:{address.port}/", timeout=10).read()
    print(f"started {args.name} at {address.host}:{address.port}, fetched {len(page)} bytes")

    listed = [p.process_name for p in client.List(pb.ListRequest()).processes]
    if args.name not in listed:
        sys.exit(f"{args.name} is missing from List: {listed}")
    print(f"listed: {listed}")

    stopped = client.Stop(pb.StopRequest(process_name=args.name)).stopped
    print(f"stopped: {list(stopped)}")
    if not deleted.wait(timeout=30):
        sys.exit(f"the watch saw no DELETED event; it saw {[pb.WatchEventType.Name(e.type) for e in events]}")
    watch.cancel()
    kinds = [pb.WatchEventType.Name(e.type) for e in events]
    print(f"watched: {kinds}")
    if args.name in [p.process_name for p in client.List(pb.ListRequest()).processes]:
        sys.exit(f"{args.name} is still listed after Stop")
    print("ok")


if __name__ == "__main__":
    main()
