"""Makes one AWS API call with boto3 against an endpoint and prints the outcome as one JSON line.

Lets Rust tests drive the moto launcher through the real AWS APIs without an AWS SDK of their own.

Usage: ``aws_call.py --endpoint URL --region R --access-key-id K --secret-access-key S
[--session-token T] SERVICE OPERATION [PARAMS_JSON]``, e.g. ``... eks describe_cluster
'{"name": "hydro-eks"}'``. ``OPERATION`` is boto3's snake_case method name.

Prints ``{"ok": true, "response": {...}}`` (timestamps as strings, ``ResponseMetadata`` dropped)
or ``{"ok": false, "status": 403, "code": "InvalidClientTokenId", "message": "..."}`` and exits
0 either way, so a caller can assert on refusals; other failures exit non-zero with a traceback.
No retries: every call reaches the server exactly once, which keeps the launcher's counters exact.
"""

import argparse
import json
import os
import sys


def parse_args(argv):
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--secret-access-key", required=True)
    parser.add_argument("--session-token")
    parser.add_argument("service")
    parser.add_argument("operation")
    parser.add_argument("params", nargs="?", default="{}")
    return parser.parse_args(argv)


def call(args):
    """Makes the call; returns the JSON-ready outcome."""
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.session.Session().client(
        args.service,
        endpoint_url=args.endpoint,
        region_name=args.region,
        aws_access_key_id=args.access_key_id,
        aws_secret_access_key=args.secret_access_key,
        aws_session_token=args.session_token,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    try:
        response = getattr(client, args.operation)(**json.loads(args.params))
    except botocore.exceptions.ClientError as error:
        return {
            "ok": False,
            "status": error.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
            "code": error.response.get("Error", {}).get("Code"),
            "message": error.response.get("Error", {}).get("Message"),
        }
    response.pop("ResponseMetadata", None)
    return {"ok": True, "response": response}


def main(argv=None):
    """Runs the call of the command line and prints its outcome."""
    args = parse_args(argv)
    # Only the command line decides where the call goes and with which keys.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    sys.stdout.write(json.dumps(call(args), default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
