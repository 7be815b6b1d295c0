"""Runs moto (STS, IAM, EKS) in-process on loopback for Hydroplane's EKS runtime tests.

moto alone cannot stand in for AWS in those tests; a small WSGI middleware in front of moto's
WSGI app closes the gaps:

* **Presigned STS requests.** An EKS bearer token is a presigned ``GET /?Action=GetCallerIdentity``
  URL with no ``Authorization`` header; moto routes such a request to S3 and answers 200 with a
  bucket list, and moto's IAM authentication (which reads the ``Authorization`` header) cannot
  handle it either. The middleware recognises a request whose query has ``X-Amz-Credential`` with
  the service ``sts`` (and no ``Authorization`` header), checks it like STS does (below), then
  re-signs it as an ordinary header-signed POST with the same key and hands it to moto's STS. The
  answer is therefore moto's real ``GetCallerIdentityResponse`` XML for that key: the IAM user's
  ARN for a user's key, the ``assumed-role`` ARN for credentials from AssumeRole.
* **EKS endpoint and CA.** moto gives every cluster a made-up endpoint and 1400 random characters
  as CA. With ``--eks-endpoint`` / ``--eks-ca-file`` every cluster created afterwards (through
  the real EKS API, CreateCluster) has exactly that endpoint and, as ``certificateAuthority.data``,
  the base64 of the PEM file's bytes (as real EKS does). This is done on moto's model objects, so
  CreateCluster, DescribeCluster and ListClusters agree.
* **AssumeRole of a missing role.** moto lets anyone assume any ARN. When moto accepted an
  AssumeRole whose role does not exist in its IAM, the middleware replaces the answer with STS's
  403 ``AccessDenied``: ``User: <caller arn> is not authorized to perform: sts:AssumeRole on
  resource: <role arn>``.
* **Signature check of body-less requests.** In IAM authentication mode moto hashes its parsed
  parameters (for a GET: the request headers) instead of the empty body when it re-signs a
  request, so every EKS ``GET`` (DescribeCluster) failed with SignatureDoesNotMatch; a patch of
  ``IAMRequestBase._create_aws_request`` makes it hash the body actually sent.
* **AssumeRoleWithWebIdentity (IRSA).** STS takes it unsigned (the web identity token is the
  credential), which moto's authentication mode refuses. The middleware answers an unsigned
  ``AssumeRoleWithWebIdentity`` itself, through moto's STS backend (so the credentials it hands
  out are moto's own and work for every later call): a missing token is ``InvalidIdentityToken``,
  a role moto's IAM does not know is ``AccessDenied``. The token is not verified (there is no
  OIDC provider here); each one seen is counted under ``web_identity_tokens`` in the stats, so a
  test sees which token a caller sent. The credentials last ``DurationSeconds``, else
  ``--web-identity-duration-seconds`` (default 3600), so a test can make them expire soon.
* **Counters.** ``GET /_launcher/stats`` returns ``{"sts": {action: n}, "sts_presigned": {action:
  n}, "eks": {action: n}}``: every STS call by action (presigned ones included), the presigned
  subset, and every EKS call by operation name. Calls are counted whatever their outcome.
  ``POST /_launcher/reset-stats`` zeroes them.

What is checked, and by whom (moto 5.2, verified by tests/moto_launcher.rs):

* moto runs in IAM authentication mode (``settings.INITIAL_NO_AUTH_ACTION_COUNT = 0``, the
  in-process form of the env var ``INITIAL_NO_AUTH_ACTION_COUNT=0``), switched on after start-up
  has created the fixtures. In that mode moto, for header-signed requests: rejects an access key it
  does not know with 403 ``InvalidClientTokenId``; rejects a session token that does not belong to
  the key (``InvalidClientTokenId``); *recomputes the SigV4 signature* and answers 403
  ``SignatureDoesNotMatch`` on a mismatch; and evaluates identity policies and, for AssumeRole of
  an existing role, its trust policy. Its refusals of EKS calls are moto's generic XML errors
  (403), not EKS's JSON ones, so an SDK sees an unmodelled 403. It does not check
  ``X-Amz-Date`` against the clock (no skew or expiry check) and does not check the expiry of
  temporary credentials.
* For presigned STS requests moto checks nothing, so the middleware does: unknown key or
  mismatched session token -> 403 ``InvalidClientTokenId``; SigV4 query signature recomputed
  (method, path, every query parameter but ``X-Amz-Signature``, the headers named in
  ``X-Amz-SignedHeaders``, payload hash = SHA-256 of the empty body, as botocore signs an https
  URL) -> 403 ``SignatureDoesNotMatch`` with the expected canonical request in the message. The
  ``host`` value tried is, in turn, the request's own Host header, ``sts.<region>.amazonaws.com``
  and ``sts.amazonaws.com``: a caller may forward a token minted for the real STS endpoint to this
  server. Every other signed header (``x-k8s-aws-id``) must be sent along with its signed value.
  ``X-Amz-Date``/``X-Amz-Expires`` are *not* checked against the clock, so tokens made with a
  frozen clock verify; expiry is the Kubernetes simulator's job.

Output contract: the first line on stdout is one JSON object, then stdout stays silent::

    {"url": "http://127.0.0.1:PORT", "access_key_id": "...", "secret_access_key": "...",
     "account": "123456789012", "role_arn": "arn:aws:iam::123456789012:role/EKSAdmin"}

The keys belong to the IAM user ``hydroplane`` (inline policy allowing ``*`` on ``*``); the role
``EKSAdmin`` has the same policy and trusts that user and the account root. Logs go to stderr
(the parent must drain it or let it through). The launcher exits on SIGTERM or SIGINT, and when
its stdin reaches EOF, so a parent must give it a pipe as stdin and keep it open.

Flags: ``--port`` (default 0: a free port), ``--region`` (default us-west-2; only the start-up
self-check uses it: clusters live in whichever region a call is signed for), ``--eks-endpoint
URL``, ``--eks-ca-file PEMFILE``.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import urllib.parse
import uuid

ACCOUNT_ID = "123456789012"
USER_NAME = "hydroplane"
ROLE_NAME = "EKSAdmin"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
ADMIN_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STS_XMLNS = "https://sts.amazonaws.com/doc/2011-06-15/"
STATS_PATH = "/_launcher/stats"
RESET_STATS_PATH = "/_launcher/reset-stats"
# The parts of a presigned URL that carry the signature rather than the call itself.
PRESIGN_PARAMETERS = {
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
}
EKS_OPERATIONS = [
    ("POST", re.compile(r"^/clusters/?$"), "CreateCluster"),
    ("GET", re.compile(r"^/clusters/?$"), "ListClusters"),
    ("GET", re.compile(r"^/clusters/[^/]+/?$"), "DescribeCluster"),
    ("DELETE", re.compile(r"^/clusters/[^/]+/?$"), "DeleteCluster"),
    ("POST", re.compile(r"^/clusters/[^/]+/node-groups/?$"), "CreateNodegroup"),
    ("GET", re.compile(r"^/clusters/[^/]+/node-groups/?$"), "ListNodegroups"),
    ("GET", re.compile(r"^/clusters/[^/]+/node-groups/[^/]+/?$"), "DescribeNodegroup"),
]

log = logging.getLogger("moto_launcher")


def parse_args(argv):
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--region", default="us-west-2", help="region of the fixtures' self-check")
    parser.add_argument("--eks-endpoint", help="endpoint URL every EKS cluster reports")
    parser.add_argument("--eks-ca-file", help="PEM file whose base64 every EKS cluster reports as CA")
    parser.add_argument(
        "--web-identity-duration-seconds",
        type=int,
        default=3600,
        help="lifetime of AssumeRoleWithWebIdentity credentials that ask for none",
    )
    return parser.parse_args(argv)


class Stats:
    """Thread-safe call counters, grouped by kind (``sts``, ``sts_presigned``, ``eks``,
    ``web_identity_tokens``)."""

    KINDS = ("sts", "sts_presigned", "eks", "web_identity_tokens")

    def __init__(self):
        """Starts with every counter at zero."""
        self._lock = threading.Lock()
        self._counts = {kind: {} for kind in self.KINDS}

    def count(self, kind, action):
        """Adds one call of ``action`` to ``kind``."""
        with self._lock:
            self._counts[kind][action] = self._counts[kind].get(action, 0) + 1

    def snapshot(self):
        """Returns a copy of the counters."""
        with self._lock:
            return {kind: dict(actions) for kind, actions in self._counts.items()}

    def reset(self):
        """Zeroes every counter."""
        with self._lock:
            self._counts = {kind: {} for kind in self.KINDS}


def read_body(environ):
    """Reads the request body and puts a rewindable copy back, so moto can read it again."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.isdigit():
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def credential_scope_of(authorization):
    """Returns ``(access_key_id, date, region, service)`` of a SigV4 Authorization header, or None."""
    match = re.search(r"Credential=([^/\s,]+)/(\d{8})/([^/\s,]+)/([^/\s,]+)/aws4_request", authorization)
    return match.groups() if match else None


def sts_error(status, code, message):
    """Builds an STS-style XML error response as ``(status line, headers, body)``."""
    body = (
        f'<ErrorResponse xmlns="{STS_XMLNS}"><Error><Type>Sender</Type>'
        f"<Code>{xml_escape(code)}</Code><Message>{xml_escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
    reasons = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}
    headers = [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))]
    return f"{status} {reasons.get(status, 'Error')}", headers, body


def xml_escape(text):
    """Escapes text for an XML element."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sigv4_quote(text):
    """Percent-encodes as SigV4 canonical strings require (RFC 3986 unreserved characters kept)."""
    return urllib.parse.quote(text, safe="-_.~")


def sigv4_signature(secret, date, region, service, string_to_sign):
    """Derives the SigV4 signing key and signs ``string_to_sign`` with it."""

    def sign(key, message):
        """One HMAC-SHA256 step of the key derivation."""
        return hmac.new(key, message.encode(), hashlib.sha256).digest()

    key = sign(("AWS4" + secret).encode(), date)
    key = sign(key, region)
    key = sign(key, service)
    key = sign(key, "aws4_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class PresignedRejection(Exception):
    """A presigned request that STS would refuse; carries the STS error code and message."""

    def __init__(self, code, message):
        """Keeps the STS error code and message."""
        super().__init__(message)
        self.code = code
        self.message = message


class LauncherMiddleware:
    """WSGI middleware in front of moto: presigned STS, AssumeRole checks, counters, stats API."""

    def __init__(self, app, stats, web_identity_duration=3600):
        """Wraps moto's WSGI ``app``; counts into ``stats``."""
        self.app = app
        self.stats = stats
        self.web_identity_duration = web_identity_duration

    def __call__(self, environ, start_response):
        """Handles one request."""
        path = environ.get("PATH_INFO", "")
        if path == STATS_PATH:
            return self._json(start_response, self.stats.snapshot())
        if path == RESET_STATS_PATH:
            self.stats.reset()
            return self._json(start_response, {"reset": True})

        authorization = environ.get("HTTP_AUTHORIZATION", "")
        query = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        presigned_scope = self._presigned_sts_scope(query) if not authorization else None
        if presigned_scope is not None:
            return self._presigned_sts(environ, start_response, query, presigned_scope)

        if not authorization and environ.get("REQUEST_METHOD") == "POST":
            params = dict(query)
            params.update(urllib.parse.parse_qsl(read_body(environ).decode("utf-8", "replace")))
            if params.get("Action") == "AssumeRoleWithWebIdentity":
                return self._assume_role_with_web_identity(start_response, params)

        scope = credential_scope_of(authorization)
        service = scope[3] if scope else None
        if service == "eks":
            self.stats.count("eks", eks_operation(environ.get("REQUEST_METHOD", ""), path))
            return self.app(environ, start_response)
        if service == "sts":
            body = read_body(environ)
            params = dict(query)
            params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
            action = params.get("Action", "Unknown")
            self.stats.count("sts", action)
            if action == "AssumeRole":
                return self._assume_role(environ, start_response, params, scope)
        return self.app(environ, start_response)

    @staticmethod
    def _json(start_response, value):
        """Answers 200 with a JSON document."""
        body = json.dumps(value, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _presigned_sts_scope(query):
        """Returns the credential scope parts of a presigned STS query, or None if it is not one."""
        credential = dict(query).get("X-Amz-Credential")
        if not credential:
            return None
        parts = credential.split("/")
        if len(parts) != 5 or parts[3] != "sts":
            return None
        return parts

    def _presigned_sts(self, environ, start_response, query, scope):
        """Checks a presigned STS request as STS would and answers it through moto's STS."""
        params = dict(query)
        action = params.get("Action", "Unknown")
        self.stats.count("sts", action)
        self.stats.count("sts_presigned", action)
        access_key_id, date, region = scope[0], scope[1], scope[2]
        try:
            token = params.get("X-Amz-Security-Token")
            secret, session_token = lookup_credentials(access_key_id, region, token)
            verify_presigned_signature(environ, query, secret, date, region)
        except PresignedRejection as rejection:
            log.info("presigned %s refused: %s %s", action, rejection.code, rejection.message)
            status, headers, body = sts_error(403, rejection.code, rejection.message)
            start_response(status, headers)
            return [body]
        call = {key: value for key, value in query if key not in PRESIGN_PARAMETERS}
        resign_as_post(environ, call, access_key_id, secret, session_token, region)
        return self.app(environ, start_response)

    def _assume_role(self, environ, start_response, params, scope):
        """Lets moto answer AssumeRole, but refuses it (as STS does) when the role does not exist."""
        captured = {}

        def capture(status, headers, exc_info=None):
            """Holds moto's status and headers back until the answer has been looked at."""
            captured["status"], captured["headers"] = status, headers
            return lambda data: captured.setdefault("written", []).append(data)

        chunks = self.app(environ, capture)
        try:
            body = b"".join(captured.get("written", [])) + b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        role_arn = params.get("RoleArn", "")
        if captured["status"].startswith("200") and not role_exists(role_arn):
            caller = caller_arn(scope[0], scope[2])
            log.info("AssumeRole of missing role %s by %s refused", role_arn, caller)
            message = f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            status, headers, body = sts_error(403, "AccessDenied", message)
            start_response(status, headers)
            return [body]
        start_response(captured["status"], captured["headers"])
        return [body]


    def _assume_role_with_web_identity(self, start_response, params):
        """Answers an unsigned AssumeRoleWithWebIdentity as STS would, with moto's credentials."""
        from moto.sts.models import sts_backends

        self.stats.count("sts", "AssumeRoleWithWebIdentity")
        token = params.get("WebIdentityToken", "")
        role_arn = params.get("RoleArn", "")
        if not token:
            status, headers, body = sts_error(400, "InvalidIdentityToken", "No web identity token was given.")
        elif not role_exists(role_arn):
            message = f"Not authorized to perform sts:AssumeRoleWithWebIdentity on resource: {role_arn}"
            status, headers, body = sts_error(403, "AccessDenied", message)
        else:
            self.stats.count("web_identity_tokens", token)
            # The unsigned call names no region; the account's credentials are the same in all.
            region = "us-east-1"
            duration = int(params.get("DurationSeconds") or self.web_identity_duration)
            role = sts_backends[ACCOUNT_ID][partition_of(region)].assume_role_with_web_identity(
                region_name=region,
                role_session_name=params.get("RoleSessionName", "web-identity"),
                role_arn=role_arn,
                policy=None,
                duration=duration,
                external_id=None,
            )
            expiration = role.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
            body = (
                f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_XMLNS}"><AssumeRoleWithWebIdentityResult>'
                f"<Credentials><AccessKeyId>{role.access_key_id}</AccessKeyId>"
                f"<SecretAccessKey>{xml_escape(role.secret_access_key)}</SecretAccessKey>"
                f"<SessionToken>{xml_escape(role.session_token)}</SessionToken>"
                f"<Expiration>{expiration}</Expiration></Credentials>"
                f"<AssumedRoleUser><Arn>{xml_escape(role.arn)}</Arn>"
                f"<AssumedRoleId>{xml_escape(role.user_id)}</AssumedRoleId></AssumedRoleUser>"
                f"<SubjectFromWebIdentityToken>system:serviceaccount</SubjectFromWebIdentityToken>"
                f"</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
                f"</ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
            ).encode()
            status, headers = "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))]
            log.info("AssumeRoleWithWebIdentity of %s for %s s", role_arn, duration)
        start_response(status, headers)
        return [body]


def eks_operation(method, path):
    """Names the EKS operation of a REST request (``METHOD path`` when unknown)."""
    for operation_method, pattern, name in EKS_OPERATIONS:
        if method == operation_method and pattern.match(path):
            return name
    return f"{method} {path}"


def partition_of(region):
    """Returns the AWS partition of a region."""
    from moto.utilities.utils import get_partition

    return get_partition(region)


def lookup_credentials(access_key_id, region, session_token):
    """Returns ``(secret, session_token)`` of a key moto issued, or raises as STS would refuse it."""
    from moto.iam.models import get_account_id_from, iam_backends
    from moto.sts.models import sts_backends

    invalid = PresignedRejection(
        "InvalidClientTokenId", "The security token included in the request is invalid."
    )
    account = get_account_id_from(access_key_id)
    partition = partition_of(region)
    assumed = sts_backends[account][partition].get_assumed_role_from_access_key(access_key_id)
    if assumed is not None:
        if session_token != assumed.session_token:
            raise invalid
        return assumed.secret_access_key, session_token
    key = iam_backends[account][partition].access_keys.get(access_key_id)
    if key is None or getattr(key, "status", "Active") != "Active" or session_token is not None:
        raise invalid
    return key.secret_access_key, None


def verify_presigned_signature(environ, query, secret, date, region):
    """Recomputes a presigned request's SigV4 signature; raises SignatureDoesNotMatch if no host fits."""
    params = dict(query)
    given = params.get("X-Amz-Signature", "")
    signed_headers = params.get("X-Amz-SignedHeaders", "")
    amz_date = params.get("X-Amz-Date", "")
    canonical_query = "&".join(
        sorted(f"{sigv4_quote(key)}={sigv4_quote(value)}" for key, value in query if key != "X-Amz-Signature")
    )
    path = urllib.parse.quote(environ.get("PATH_INFO", "") or "/", safe="/-_.~")
    header_values = {}
    for name in signed_headers.split(";"):
        if name == "host":
            continue
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is None:
            raise PresignedRejection(
                "SignatureDoesNotMatch", f"The signed header {name} is missing from the request."
            )
        header_values[name] = " ".join(value.split())
    hosts = [environ.get("HTTP_HOST", ""), f"sts.{region}.amazonaws.com", "sts.amazonaws.com"]
    canonical_requests = []
    for host in hosts:
        values = dict(header_values, host=host)
        canonical_headers = "".join(f"{name}:{values.get(name, '')}\n" for name in signed_headers.split(";"))
        canonical_request = "\n".join(
            [
                environ.get("REQUEST_METHOD", "GET"),
                path,
                canonical_query,
                canonical_headers,
                signed_headers,
                EMPTY_SHA256,
            ]
        )
        scope = f"{date}/{region}/sts/aws4_request"
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
        )
        if hmac.compare_digest(sigv4_signature(secret, date, region, "sts", string_to_sign), given):
            return
        canonical_requests.append(canonical_request)
    raise PresignedRejection(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Canonical requests tried (one per host):\n" + "\n----\n".join(canonical_requests),
    )


def resign_as_post(environ, call, access_key_id, secret, session_token, region):
    """Turns the request into a header-signed POST of ``call``, which moto routes to STS and checks."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = environ.get("HTTP_HOST", "127.0.0.1")
    body = urllib.parse.urlencode(call).encode()
    request = AWSRequest(
        method="POST",
        url=f"http://{host}/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host},
    )
    SigV4Auth(Credentials(access_key_id, secret, session_token), "sts", region).add_auth(request)
    for key in [key for key in environ if key.startswith("HTTP_")]:
        del environ[key]
    for name, value in request.headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.update(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "RAW_URI": "/",
            "REQUEST_URI": "/",
            "CONTENT_TYPE": request.headers["Content-Type"],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
    )
    environ.pop("HTTP_CONTENT_TYPE", None)
    environ.pop("HTTP_CONTENT_LENGTH", None)


def role_exists(role_arn):
    """Tells whether moto's IAM knows the role."""
    from moto.iam.models import iam_backends

    match = re.match(r"^arn:([^:]+):iam::(\d{12}):role/", role_arn)
    if not match:
        return False
    try:
        iam_backends[match.group(2)][match.group(1)].get_role_by_arn(role_arn)
        return True
    except Exception:  # moto raises its own NotFound type, which moved between versions.
        return False


def caller_arn(access_key_id, region):
    """Returns the ARN moto's STS reports for an access key."""
    from moto.iam.models import get_account_id_from
    from moto.sts.models import sts_backends

    account = get_account_id_from(access_key_id)
    return sts_backends[account][partition_of(region)].get_caller_identity(access_key_id, region)[1]


def install_cluster_overrides(endpoint, ca_data):
    """Makes every EKS cluster moto creates from now on report ``endpoint`` and ``ca_data``."""
    from moto.eks import models

    original_init = models.Cluster.__init__

    def init(self, *args, **kwargs):
        """moto's Cluster constructor, then our endpoint and CA."""
        original_init(self, *args, **kwargs)
        if endpoint is not None:
            self.endpoint = endpoint
        if ca_data is not None:
            self.certificate_authority = {"data": ca_data}

    models.Cluster.__init__ = init


def create_fixtures(url):
    """Creates the IAM user ``hydroplane`` with a key and the role ``EKSAdmin``; returns the key."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name="us-east-1"
    )
    iam = session.client("iam", endpoint_url=url)
    iam.create_user(UserName=USER_NAME)
    iam.put_user_policy(UserName=USER_NAME, PolicyName="admin", PolicyDocument=ADMIN_POLICY)
    key = iam.create_access_key(UserName=USER_NAME)["AccessKey"]
    # moto compares the trust policy's principals with the caller's ARN literally, so the user is
    # named as well as the account root (which is what real AWS matches it with).
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "AWS": [f"arn:aws:iam::{ACCOUNT_ID}:root", f"arn:aws:iam::{ACCOUNT_ID}:user/{USER_NAME}"]
                },
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=ROLE_NAME, PolicyName="admin", PolicyDocument=ADMIN_POLICY)
    return key["AccessKeyId"], key["SecretAccessKey"]


def install_auth_fixes():
    """Makes moto's signature check hash the body that was sent, not moto's parsed parameters.

    moto rebuilds the request it re-signs from ``body or data``; for a body-less GET (EKS
    DescribeCluster is ``GET /clusters/NAME``) ``data`` is the header dict, so the payload hash
    is wrong and every such call gets 403 SignatureDoesNotMatch with valid keys. (Form POSTs
    must keep ``data``: their raw body has already been consumed by then.)
    """
    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request

    def create_aws_request(self):
        """moto's request, with the body exactly as received."""
        request = original(self)
        if not self._body and self._method in ("GET", "HEAD", "DELETE"):
            request.data = b""
        return request

    IAMRequestBase._create_aws_request = create_aws_request


def set_authentication(enabled):
    """Switches moto's IAM authentication on (every request) or off (no request)."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if enabled else float("inf")
    ActionAuthenticatorMixin.request_count = 0


def self_check(url, region, access_key_id, secret):
    """Fails fast if moto's authentication does not behave as the docstring says."""
    import boto3
    import botocore.exceptions

    good = boto3.client(
        "sts",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
    )
    arn = good.get_caller_identity()["Arn"]
    if arn != f"arn:aws:iam::{ACCOUNT_ID}:user/{USER_NAME}":
        raise RuntimeError(f"GetCallerIdentity answered {arn}")
    bad = boto3.client(
        "sts",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="AKIAUNKNOWN000000000",
        aws_secret_access_key="x",
    )
    try:
        bad.get_caller_identity()
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] != "InvalidClientTokenId":
            raise
    else:
        raise RuntimeError("moto accepted an unknown access key")


def wait_for_stdin_eof(stop):
    """Sets ``stop`` once stdin reaches EOF: the parent is gone or dropped its end of the pipe."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def main(argv=None):
    """Starts the server, creates the fixtures, prints the JSON line and serves until told to stop."""
    args = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="moto_launcher: %(message)s")
    # moto and boto3 must not pick up the developer's AWS settings, nor send anything anywhere.
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        del os.environ[name]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    try:
        from moto.moto_server.werkzeug_app import MotoRequestHandler as BaseHandler
    except ImportError:  # older moto: werkzeug's own handler is what it used then.
        from werkzeug.serving import WSGIRequestHandler as BaseHandler

    class RequestHandler(BaseHandler):
        """moto's request handler, logging one plain line per request (werkzeug adds colours)."""

        def log_request(self, code="-", size="-"):
            """Logs the request line and status."""
            log.info('"%s" %s', self.requestline, code)

    ca_data = None
    if args.eks_ca_file:
        with open(args.eks_ca_file, "rb") as ca_file:
            ca_data = base64.b64encode(ca_file.read()).decode()
    install_cluster_overrides(args.eks_endpoint, ca_data)
    install_auth_fixes()

    stats = Stats()
    app = LauncherMiddleware(
        DomainDispatcherApplication(create_backend_app), stats, args.web_identity_duration_seconds
    )
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=RequestHandler)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()

    set_authentication(False)
    access_key_id, secret = create_fixtures(url)
    set_authentication(True)
    self_check(url, args.region, access_key_id, secret)
    stats.reset()

    started = {
        "url": url,
        "access_key_id": access_key_id,
        "secret_access_key": secret,
        "account": ACCOUNT_ID,
        "role_arn": ROLE_ARN,
    }
    sys.stdout.write(json.dumps(started) + "\n")
    sys.stdout.flush()
    log.info("serving on %s (started %s)", url, datetime.datetime.now(datetime.timezone.utc).isoformat())

    threading.Thread(target=wait_for_stdin_eof, args=(stop,), name="stdin", daemon=True).start()
    # Event.wait without a timeout would block signal delivery on some Pythons; poll instead.
    while not stop.wait(0.5):
        pass
    log.info("stopping")
    logging.shutdown()
    sys.stderr.flush()
    # Interpreter teardown with moto loaded takes seconds and nothing here needs cleaning up.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
