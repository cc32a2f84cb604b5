"""Retry transient cloud errors with capped exponential backoff (full jitter); turn
permanent ones into :class:`wire.errors.CloudError` with the API code and a hint.

Transient: ``Throttling*``, ``ServiceUnavailable``, ``InternalError``/``UnknownError``,
any HTTP 5xx and a failed connection. Everything else fails at once: retrying a
``Forbidden.RAM`` only wastes the user's time.
"""

import logging
import random
import time

from wire.errors import CloudError

log = logging.getLogger(__name__)

TRANSIENT_CODES = frozenset([
    "Throttling", "Throttling.User", "Throttling.Api", "Throttling.Resource",
    "ServiceUnavailable", "InternalError", "UnknownError", "OperationConflict",
    "LastTokenProcessing", "IdempotenceProcessing",
])

# Hints from ../shared/design/ALIBABA.md for the codes users meet.
HINTS = {
    "Forbidden.RAM": "the RAM user behind this AccessKey needs the AliyunECSFullAccess and "
                     "AliyunVPCFullAccess policies: grant them in the RAM console",
    "Forbidden.SubUser": "this RAM user may not call that API: grant it AliyunECSFullAccess "
                         "and AliyunVPCFullAccess, or use another AccessKey",
    "IllegalTimestamp": "this machine's clock is wrong: set the time right (e.g. `chronyc "
                        "makestep` or `ntpdate pool.ntp.org`) and run again",
    "InvalidAccessKeyId.NotFound": "access_id is unknown: check it in user_config.json; the "
                                   "AccessKey may have been deleted or disabled",
    "SignatureDoesNotMatch": "secret_key does not belong to access_id: check both in "
                             "user_config.json",
    "InvalidSecurityToken.Expired": "the STS token has expired: get a new one",
    "InvalidImageName.Duplicated": "an image with this image_name already exists in the "
                                   "region: choose another image_name in user_config.json or "
                                   "delete the old image",
    "InvalidAccountStatus.NotEnoughBalance": "the account's balance is too low to create "
                                             "pay-as-you-go resources: top it up",
    "InvalidAccountStatus.SnapshotServiceUnavailable": "the snapshot service is not activated:"
                                                       " activate it in the ECS console",
    "QuotaExceeded.Vpc": "the region has as many VPCs as the quota allows: delete an unused "
                         "one, raise the quota, or reuse one with --vpc-id/--vswitch-id",
    "IdempotentParameterMismatch": "this rerun repeats an interrupted call (same ClientToken)"
                                   " with other parameters: run the same command with the "
                                   "settings of the first run (user_config.json, options) to "
                                   "resume it, or release what it made and start over",
    "Throttling": "the API is throttling this account: wait a minute and run the same "
                  "command again (it resumes)",
    "ServiceUnavailable": "the service is temporarily unavailable: run the same command again "
                          "later (it resumes)",
}


def api_error_fields(exc):
    """(code, http_status, message, request_id) of an SDK exception; code None when it is not
    an API answer (a connection problem)."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    request_id = getattr(exc, "request_id", None)
    if code in (None, "", "None"):
        code = None
    return code, status, message, request_id


def is_transient(code, status):
    if code is None:
        return True  # no answer at all: connection refused/reset, timeout
    if code in TRANSIENT_CODES or code.startswith("Throttling"):
        return True
    return status is not None and int(status) >= 500


def to_cloud_error(action, exc):
    code, status, message, request_id = api_error_fields(exc)
    if code is None:
        return CloudError("%s: could not reach the cloud API: %s" % (action, message),
                          code="cloud.unreachable",
                          hint="check the network path to the API endpoint and run again",
                          action=action)
    return CloudError("%s failed: %s (%s)" % (action, code, message),
                      code="cloud." + code, hint=HINTS.get(code), action=action,
                      api_code=code, http_status=status, request_id=request_id)


class Retrier(object):
    def __init__(self, attempts=6, base=1.0, cap=30.0, sleep=time.sleep, rng=None):
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.sleep = sleep
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret

    def delay(self, attempt):
        return self.rng.uniform(0, min(self.cap, self.base * (2 ** attempt)))

    def call(self, action, fn, is_sdk_error):
        """Run ``fn()``; ``is_sdk_error(exc)`` tells which exceptions are cloud answers."""
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_sdk_error(exc):
                    raise
                code, status, message, _ = api_error_fields(exc)
                if not is_transient(code, status) or attempt == self.attempts - 1:
                    raise to_cloud_error(action, exc) from exc
                wait = self.delay(attempt)
                log.info("%s: transient %s (%s), retry %d/%d in %.1fs", action,
                         code or "connection error", status, attempt + 1,
                         self.attempts - 1, wait)
                self.sleep(wait)
        raise AssertionError("unreachable")
