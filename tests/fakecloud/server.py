"""The HTTP face of the fake cloud: ECS and VPC RPC calls (ACS3-HMAC-SHA256 checked) and
the instance metadata service, on 127.0.0.1 and a random port, in a thread.

The real SDK clients reach it with ``Config(endpoint="127.0.0.1:PORT", protocol="http")``.
The metadata service answers both plain paths (``GET /latest/meta-data/instance-id``) and
proxy-style requests for ``http://100.100.100.200/latest/...``, so the SDK's own ECS RAM
role credential provider can be pointed at it with its ``proxy`` option.
"""

import calendar
import contextlib
import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from tests.fakecloud import signing
from tests.fakecloud.world import ApiError, World, iso_after, new_request_id

# The known AccessKey pairs. "operator" may do everything; "readonly" is a RAM user
# without AliyunECSFullAccess / AliyunVPCFullAccess.
OPERATOR_KEY = ("LTAI5tFakeOperator0001", "fake-operator-secret-0001")
READONLY_KEY = ("LTAI5tFakeReadOnly0002", "fake-readonly-secret-0002")
MAX_SKEW = 15 * 60


class FakeCloud(object):
    """Start with ``with FakeCloud() as fake:``; ``fake.endpoint`` is ``127.0.0.1:PORT``."""

    def __init__(self, world=None, role="AliyunECSGo2AliyunRole"):
        self.world = world or World()
        self.keys = {OPERATOR_KEY[0]: {"secret": OPERATOR_KEY[1], "policy": "full"},
                     READONLY_KEY[0]: {"secret": READONLY_KEY[1], "policy": "readonly"}}
        self.clock_offset = 0          # seconds the server's clock is ahead of real time
        self.role = role
        # what the role's temporary keys may call: None for everything, or RAM actions
        # ("ecs:CreateImage", ...) as in a custom policy document
        self.role_actions = None
        self.metadata_instance = None  # the instance "we" run in, for the metadata service
        self.metadata_tokens = set()
        self.require_metadata_token = False
        self.sts_issued = []
        self._nonces = set()
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    # ------------------------------------------------------------------ life
    def start(self):
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://" + self.endpoint

    # ------------------------------------------------------------------ auth
    def now(self):
        return time.time() + self.clock_offset

    def secret_for(self, ak):
        entry = self.keys.get(ak)
        if entry is None:
            raise signing.SignatureProblem("InvalidAccessKeyId.NotFound",
                                           "Specified access key is not found.")
        return entry["secret"]

    def issue_sts(self):
        """Temporary keys for the metadata service's RAM role answer."""
        ak = "STS.Fake" + secrets.token_hex(8)
        entry = {"secret": secrets.token_hex(16), "token": "CAIS" + secrets.token_hex(24),
                 "policy": "full" if self.role_actions is None
                 else frozenset(self.role_actions),
                 "expires": time.time() + 6 * 3600}
        with self._lock:
            self.keys[ak] = entry
            self.sts_issued.append(ak)
        return {"Code": "Success", "AccessKeyId": ak, "AccessKeySecret": entry["secret"],
                "SecurityToken": entry["token"], "Expiration": iso_after(6 * 3600),
                "LastUpdated": iso_after(0)}

    def authenticate(self, method, path, query_pairs, headers, body):
        """Returns ``(access_key_id, key entry)`` of the caller or raises :class:`ApiError`."""
        try:
            stamp = headers.get("x-acs-date", "")
            try:
                when = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
            except ValueError:
                raise ApiError("IllegalTimestamp") from None
            if abs(when - self.now()) > MAX_SKEW:
                raise ApiError("IllegalTimestamp")
            ak = signing.verify(method, path, query_pairs, headers, body, self.secret_for)
        except signing.SignatureProblem as e:
            raise ApiError(e.code, e.message) from None
        entry = self.keys[ak]
        if entry.get("token") is not None:
            if headers.get("x-acs-security-token") != entry["token"]:
                raise ApiError("InvalidSecurityToken.Mismatch")
            if entry["expires"] < self.now():
                raise ApiError("InvalidSecurityToken.Expired")
        nonce = headers.get("x-acs-signature-nonce")
        with self._lock:
            if nonce in self._nonces:
                raise ApiError("SignatureNonceUsed")
            self._nonces.add(nonce)
        return ak, entry


class _Handler(BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle plus delayed
        # ACKs cost 40 ms per call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def _send(self, status, body, content_type="application/json;charset=utf-8", headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self):
        """The client "dies": no answer at all, the connection just closes."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)

    def _dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        path = split.path or "/"
        if path.startswith("/latest/"):
            return self._metadata(path)
        world = self.fake.world
        if world.dark:
            return self._drop()
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qsl(split.query, keep_blank_values=True)
        request_id = new_request_id()
        try:
            ak, principal = self.fake.authenticate(self.command, path, query, headers, body)
            params = dict(query)
            if body and "x-www-form-urlencoded" in headers.get("content-type", ""):
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            action = headers.get("x-acs-action", "")
            world.record(action, params, ak)
            hold = world.take_hold(action)
            if hold is not None:  # answered late: the client may die meanwhile
                hold.arrived.set()
                hold.released.wait(hold.timeout)
            fault = world.take_fault(action)
            if fault is not None and not fault.crash:
                raise ApiError(fault.code, status=fault.status)
            try:
                result = world.handle(headers.get("x-acs-version", ""), action, params,
                                      principal)
            finally:
                if hold is not None:
                    hold.done.set()
            if fault is not None and fault.crash:
                with world.lock:
                    world.dark = True
                    world.crashed_at = len(world.calls)
                world.crash_event.set()
                return self._drop()
        except ApiError as e:
            return self._send(e.status, json.dumps({
                "RequestId": request_id, "HostId": self.fake.endpoint, "Code": e.code,
                "Message": e.message, "Recommend": "https://api.aliyun.com/troubleshoot"}))
        result = dict(result)
        result["RequestId"] = request_id
        return self._send(200, json.dumps(result))

    def _metadata(self, path):
        fake = self.fake
        if path == "/latest/api/token" and self.command == "PUT":
            token = secrets.token_hex(16)
            fake.metadata_tokens.add(token)
            return self._send(200, token, "text/plain")
        given = self.headers.get("X-aliyun-ecs-metadata-token")
        if given is not None and given not in fake.metadata_tokens:
            return self._send(401, "Unauthorized", "text/plain")
        if given is None and fake.require_metadata_token:
            return self._send(403, "Forbidden", "text/plain")
        with fake.world.lock:
            status, text = fake.world.metadata(path, fake.metadata_instance, fake.role,
                                               fake.issue_sts)
        return self._send(status, text, "text/plain")
