"""Prints the EKS bearer token botocore makes (as ``aws eks get-token`` does), with a frozen clock.

The reference Hydroplane's Rust token encoding is compared with. It follows awscli's
``awscli/customizations/eks/get_token.py`` (``STSClientFactory`` + ``TokenGenerator``, unchanged
from awscli 1.16 through 1.4x and awscli v2), reimplemented on botocore so awscli need not be
installed:

* an ``sts`` client for ``--region`` with the given static credentials and
  ``sts_regional_endpoints = regional``, so the URL is ``https://sts.<region>.amazonaws.com/``
  (botocore >= 1.36 defaults to that anyway);
* the cluster name is passed as the pseudo-parameter ``x-k8s-aws-id``, moved into the request
  context on ``provide-client-params.sts.GetCallerIdentity`` and set as a header on
  ``before-sign.sts.GetCallerIdentity``, so it becomes a signed header;
* ``generate_presigned_url('get_caller_identity', ExpiresIn=60, HttpMethod='GET')``: SigV4 query
  signing (``SigV4QueryAuth``), ``X-Amz-SignedHeaders=host;x-k8s-aws-id``, the payload hash the
  SHA-256 of the empty body (botocore hashes the payload of https URLs), query parameters in the
  order ``Action, Version, X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
  X-Amz-SignedHeaders[, X-Amz-Security-Token], X-Amz-Signature``;
* the token is ``k8s-aws-v1.`` + URL-safe base64 of the URL without ``=`` padding.

The clock is frozen at ``--timestamp`` by replacing the clock botocore's signers read:
``botocore.auth.get_current_datetime`` (botocore >= 1.34.x; it returns naive UTC) or, on older
botocore, ``botocore.auth.datetime`` (whose ``datetime.utcnow()`` they call). The AWS settings
of the environment and of ``~/.aws`` are ignored so the output depends only on the arguments.

Usage: ``botocore_token.py --access-key-id AKID --secret-access-key SECRET [--session-token T]
--region us-west-2 --cluster-name NAME --timestamp 2025-01-02T03:04:05Z``. Prints only the token
and a newline on stdout.
"""

import argparse
import base64
import datetime
import os
import sys
import types

TOKEN_PREFIX = "k8s-aws-v1."
K8S_AWS_ID_HEADER = "x-k8s-aws-id"
URL_TIMEOUT = 60


def parse_args(argv):
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--secret-access-key", required=True)
    parser.add_argument("--session-token")
    parser.add_argument("--region", required=True)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--timestamp", required=True, help="signing time, e.g. 2025-01-02T03:04:05Z")
    return parser.parse_args(argv)


def parse_timestamp(text):
    """Parses an RFC 3339 UTC timestamp into a naive UTC datetime, as botocore's clock returns."""
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


def freeze_botocore_clock(moment):
    """Makes botocore's signers see ``moment`` as the current time."""
    import botocore.auth

    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda *args, **kwargs: moment
        return

    class FrozenDatetime(datetime.datetime):
        """``datetime.datetime`` whose ``utcnow``/``now`` return the frozen moment."""

        @classmethod
        def utcnow(cls):
            """Returns the frozen moment."""
            return moment

        @classmethod
        def now(cls, tz=None):
            """Returns the frozen moment (in ``tz`` when given)."""
            return moment.replace(tzinfo=datetime.timezone.utc).astimezone(tz) if tz else moment

    frozen = types.ModuleType("datetime")
    frozen.__dict__.update(datetime.__dict__)
    frozen.datetime = FrozenDatetime
    botocore.auth.datetime = frozen


def isolate_from_environment():
    """Drops AWS settings of the environment and config files, which could change the URL."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def make_sts_client(access_key_id, secret_access_key, session_token, region):
    """Creates the STS client ``STSClientFactory.get_sts_client`` makes, with the header hooks."""
    import botocore.session

    session = botocore.session.get_session()
    session.set_config_variable("sts_regional_endpoints", "regional")
    client = session.create_client(
        "sts",
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
    )

    def retrieve_k8s_aws_id(params, context, **kwargs):
        """Moves the pseudo-parameter out of the API parameters into the request context."""
        if K8S_AWS_ID_HEADER in params:
            context[K8S_AWS_ID_HEADER] = params.pop(K8S_AWS_ID_HEADER)

    def inject_k8s_aws_id_header(request, **kwargs):
        """Adds the cluster name as a header before signing, so it is signed."""
        if K8S_AWS_ID_HEADER in request.context:
            request.headers[K8S_AWS_ID_HEADER] = request.context[K8S_AWS_ID_HEADER]

    client.meta.events.register("provide-client-params.sts.GetCallerIdentity", retrieve_k8s_aws_id)
    client.meta.events.register("before-sign.sts.GetCallerIdentity", inject_k8s_aws_id_header)
    return client


def get_token(client, cluster_name):
    """Returns the token for ``cluster_name``, as awscli's ``TokenGenerator.get_token``."""
    url = client.generate_presigned_url(
        "get_caller_identity",
        Params={K8S_AWS_ID_HEADER: cluster_name},
        ExpiresIn=URL_TIMEOUT,
        HttpMethod="GET",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode("utf-8")).decode("utf-8").rstrip("=")


def main(argv=None):
    """Prints the token for the command line's credentials, region, cluster and time."""
    args = parse_args(argv)
    isolate_from_environment()
    freeze_botocore_clock(parse_timestamp(args.timestamp))
    client = make_sts_client(args.access_key_id, args.secret_access_key, args.session_token, args.region)
    sys.stdout.write(get_token(client, args.cluster_name) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
