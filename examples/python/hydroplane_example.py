#!/usr/bin/env python3
"""A small Hydroplane client in Python: starts a process, reads its output, lists it, watches it
and stops it.

The gRPC stubs are generated from ../../proto with grpcio-tools on first use (into
./generated, git-ignored), so the proto files are the only source of truth:

    python3 -m venv .venv && .venv/bin/pip install -r examples/python/requirements.txt
    .venv/bin/python examples/python/hydroplane_example.py --server 127.0.0.1:50051

It runs `python3 -m http.server` as a Hydroplane process on the local runtime, fetches a page
from the address the server reports, follows the process's output (Logs) until the server logs
that request, lists the processes labelled as it labels its own (`example=python`), following
every page of the listing (`--page-size` asks for small pages), and exits non-zero with a
message if anything is off. The token, when the server needs one, must hold the `read`, `write`
and `logs` scopes.

It reaches a secured server as `hpctl` does, through flags or the same environment variables:

    --server URL          HYDROPLANE_SERVER       host:port or http://host:port (plain),
                                                  https://host:port (TLS), unix:PATH (a socket);
                                                  127.0.0.1:50051 when neither is given
    --token TOKEN         HYDROPLANE_TOKEN        the bearer token (prefer the variable or a
                                                  file: any user can read a command line)
    --token-file FILE     HYDROPLANE_TOKEN_FILE   a file holding the bearer token
    --ca-cert FILE        HYDROPLANE_CA_CERT      the CA (PEM) to trust for https, instead of
                                                  gRPC's default roots
    --client-cert FILE    HYDROPLANE_CLIENT_CERT  a client certificate (PEM) for mTLS...
    --client-key FILE     HYDROPLANE_CLIENT_KEY   ...and its private key

The token goes on every call, the Watch stream included, as `authorization: Bearer TOKEN`, and
is never printed. An error from the server is printed as its status code and message, and the
example exits with status 1.
"""

import argparse
import collections
import os
import pathlib
import socket
import sys
import threading
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
GENERATED = HERE / "generated"
DEFAULT_SERVER = "127.0.0.1:50051"


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


def parse_server(server):
    """Returns (gRPC target, whether to use TLS) for host:port, http://, https:// or unix:PATH."""
    server = server.strip()
    if server.startswith("unix:"):
        # gRPC takes these as they are; like gRPC, unix:// must be followed by an absolute path.
        if server.startswith("unix://") and not server.startswith("unix:///"):
            sys.exit(f"{server}: unix:// needs an absolute path, as in unix:///run/hydroplane.sock")
        if server in ("unix:", "unix://"):
            sys.exit(f"{server} names no socket: write unix:PATH, as in unix:/run/hydroplane.sock")
        return server, False
    scheme, separator, address = server.partition("://")
    if not separator:
        scheme, address = "http", server
    if scheme not in ("http", "https"):
        sys.exit(f"unsupported scheme {scheme}:// in {server}: use http://, https:// or unix:")
    address = address.rstrip("/")
    if not address or "/" in address or "@" in address:
        sys.exit("the server URL must be scheme://HOST:PORT, with no path, user name or password")
    return address, scheme == "https"


def read_file(flag, path):
    """Reads a file named by a flag, exiting with a message that names both when it cannot."""
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        sys.exit(f"cannot read {flag} {path}: {error.strerror}")


def read_token(token, token_file):
    """The bearer token, given or read from the token file and checked; None when neither."""
    token = (token or "").strip()
    if token and token_file:
        sys.exit("give the token with --token (HYDROPLANE_TOKEN) or --token-file (HYDROPLANE_TOKEN_FILE), not both")
    if token_file:
        token = read_file("--token-file", token_file).decode("utf-8", "replace").strip()
        if not token:
            sys.exit(f"the token file {token_file} is empty")
    if not token:
        return None
    # Only visible ASCII can go in a header; the message says so without showing the token.
    if not all("!" <= character <= "~" for character in token):
        sys.exit("the token has characters that cannot go in a gRPC header (only visible ASCII, no spaces)")
    return token


def bearer_token_interceptor(grpc, token):
    """A client interceptor that adds `authorization: Bearer TOKEN` to every unary and streaming call."""

    class Details(
        collections.namedtuple(
            "Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
        ),
        grpc.ClientCallDetails,
    ):
        pass

    header = ("authorization", f"Bearer {token}")

    def with_token(details):
        metadata = [*(details.metadata or ()), header]
        return Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            return continuation(with_token(details), request)

        def intercept_unary_stream(self, continuation, details, request):
            return continuation(with_token(details), request)

        def __repr__(self):
            return "BearerToken(<redacted>)"

    return BearerToken()


def open_channel(grpc, args):
    """The channel to the server: plain, TLS (optionally with a client certificate) or a Unix socket."""
    target, secure = parse_server(args.server)
    token = read_token(args.token, args.token_file)
    if bool(args.client_cert) != bool(args.client_key):
        sys.exit(
            "--client-cert and --client-key go together (HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY): "
            "give both or neither"
        )
    if secure:
        # Without a CA, grpc uses its default roots, as hpctl uses the system's.
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read_file("--ca-cert", args.ca_cert) if args.ca_cert else None,
            private_key=read_file("--client-key", args.client_key) if args.client_key else None,
            certificate_chain=read_file("--client-cert", args.client_cert) if args.client_cert else None,
        )
        channel = grpc.secure_channel(target, credentials)
    else:
        # TLS files for a plain server would be silently unused: the connection would look
        # verified when it is not.
        if args.ca_cert:
            sys.exit(f"--ca-cert needs an https:// server URL, not {args.server}")
        if args.client_cert:
            sys.exit(f"--client-cert and --client-key need an https:// server URL, not {args.server}")
        # gRPC would send the socket's path as the HTTP/2 :authority, which is not a valid
        # authority and makes the server reset the stream.
        options = [("grpc.default_authority", "localhost")] if target.startswith("unix:") else []
        channel = grpc.insecure_channel(target, options=options)
    if token is not None:
        channel = grpc.intercept_channel(channel, bearer_token_interceptor(grpc, token))
    return channel, token is not None


def describe(grpc, error, server, has_token):
    """One line for a failed call: the status code and the server's message, and a hint."""
    code = error.code() if hasattr(error, "code") else None
    if code is None:
        return f"error: {error}"
    line = f"error: {code.name}: {error.details()}"
    if code == grpc.StatusCode.UNAUTHENTICATED and not has_token:
        line += " (give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE)"
    elif code == grpc.StatusCode.UNAVAILABLE:
        line += (
            f" (is the Hydroplane server at {server} running? choose another with --server or HYDROPLANE_SERVER;"
            " for https, check --ca-cert and, if it wants one, --client-cert and --client-key)"
        )
    return line


def list_all(grpc, pb, client, **filters):
    """Every process of one listing (its pages followed through `next_page_token`) and the
    listing's revision, which a Watch's `since_revision` continues from with no gap.

    When the server no longer keeps the listing before its last page is read
    (FAILED_PRECONDITION on a later page), it lists again from the first page, at most 3 times.
    """
    for attempt in range(4):
        processes, token = [], None
        try:
            while True:
                request = pb.ListRequest(**filters)
                if token is not None:
                    request.page_token = token
                page = client.List(request)
                processes.extend(page.processes)
                if not page.next_page_token:
                    return processes, page.revision
                token = page.next_page_token
        except grpc.RpcError as error:
            expired = token is not None and error.code() == grpc.StatusCode.FAILED_PRECONDITION
            if not expired or attempt == 3:
                raise


def shown(process):
    """A process's name and labels, as `web {tier=front}`."""
    labels = ",".join(f"{key}={value}" for key, value in sorted(process.labels.items()))
    return f"{process.process_name} {{{labels}}}" if labels else process.process_name


def environment(name, default=None):
    """An environment variable, an empty one counting as unset."""
    return os.environ.get(name) or default


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        metavar="URL",
        default=environment("HYDROPLANE_SERVER", DEFAULT_SERVER),
        help="host:port, http://host:port, https://host:port or unix:PATH "
        f"(default: $HYDROPLANE_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument("--name", default="python-example", help="the process name to use")
    parser.add_argument(
        "--page-size",
        metavar="N",
        type=int,
        default=0,
        help="list in pages of at most N processes (default: the server's, 1000)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=environment("HYDROPLANE_TOKEN"),
        help="the bearer token (default: $HYDROPLANE_TOKEN; a file or the variable keeps it out of `ps`)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        default=environment("HYDROPLANE_TOKEN_FILE"),
        help="a file holding the bearer token (default: $HYDROPLANE_TOKEN_FILE)",
    )
    parser.add_argument(
        "--ca-cert",
        metavar="FILE",
        default=environment("HYDROPLANE_CA_CERT"),
        help="the CA certificate (PEM) to trust for https (default: $HYDROPLANE_CA_CERT, else gRPC's roots)",
    )
    parser.add_argument(
        "--client-cert",
        metavar="FILE",
        default=environment("HYDROPLANE_CLIENT_CERT"),
        help="a client certificate (PEM) for mTLS (default: $HYDROPLANE_CLIENT_CERT)",
    )
    parser.add_argument(
        "--client-key",
        metavar="FILE",
        default=environment("HYDROPLANE_CLIENT_KEY"),
        help="the client certificate's private key (PEM) (default: $HYDROPLANE_CLIENT_KEY)",
    )
    args = parser.parse_args()

    import grpc

    pb, pb_grpc = load_stubs()
    channel, has_token = open_channel(grpc, args)
    try:
        run(grpc, pb, pb_grpc.ProcessServiceStub(channel), args.name, args.page_size)
    except grpc.RpcError as error:
        sys.exit(describe(grpc, error, args.server, has_token))
    finally:
        channel.close()


def run(grpc, pb, client, name, page_size):
    """Starts, reaches, reads the output of, lists, watches and stops the process; an RpcError
    ends it."""
    # Watch from the start, in the background, to see the process come and go.
    events = []
    watch_errors = []
    deleted = threading.Event()
    watch = client.Watch(pb.WatchRequest(process_name=name))

    def follow():
        try:
            for event in watch:
                events.append(event)
                if event.type == pb.WATCH_EVENT_TYPE_DELETED:
                    deleted.set()
                    return
        except grpc.RpcError as error:
            # Cancelled is our own watch.cancel(); anything else (a refused token, a watch limit)
            # is reported by the main thread rather than lost here.
            if error.code() != grpc.StatusCode.CANCELLED:
                watch_errors.append(error)
                deleted.set()

    threading.Thread(target=follow, daemon=True).start()

    port = free_port()
    spec = pb.ProcessSpec(
        process_name=name,
        labels={"example": "python"},
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
    print(f"started {name} at {address.host}:{address.port}, fetched {len(page)} bytes")

    # http.server logs each request on stderr: follow the output until that line comes (raw
    # bytes, in chunks that need not be whole lines), within the call's timeout.
    output = b""
    for chunk in client.Logs(pb.LogsRequest(process_name=name, follow=True), timeout=30):
        output += chunk.data
        if b'"GET / HTTP/1.1" 200' in output:
            break
    line = next(line for line in output.decode(errors="replace").splitlines() if '"GET / ' in line)
    print(f"logged: {line}")

    labelled = dict(label_selector="example=python", page_size=page_size)
    processes, revision = list_all(grpc, pb, client, **labelled)
    listed = [shown(p) for p in processes]
    if name not in [p.process_name for p in processes]:
        sys.exit(f"{name} is missing from List: {listed}")
    print(f"listed at revision {revision}: {listed}")

    stopped = client.Stop(pb.StopRequest(process_name=name)).stopped
    print(f"stopped: {list(stopped)}")
    if not deleted.wait(timeout=30):
        sys.exit(f"the watch saw no DELETED event; it saw {[pb.WatchEventType.Name(e.type) for e in events]}")
    if watch_errors:
        raise watch_errors[0]
    watch.cancel()
    kinds = [pb.WatchEventType.Name(e.type) for e in events]
    print(f"watched: {kinds}")
    if name in [p.process_name for p in list_all(grpc, pb, client, page_size=page_size)[0]]:
        sys.exit(f"{name} is still listed after Stop")
    print("ok")


if __name__ == "__main__":
    main()
