"""The receiver's RAM role: the policy it needs and the check that it has it.

``image_build/receiver-ram-policy.json`` allows exactly the ECS calls the receiver makes
with its role (``receiver/cloudimage.py``: :func:`image_build.finish.build_image`, then
:func:`image_build.finish.release` with ``release_network=False``); a test runs that
code against the fake cloud and compares the calls with the policy, so either drifting
fails it. :func:`check_receiver_role` asks the API, by ``DryRun`` calls that do nothing,
whether the role may make them: a missing action is an error at the receiver's start,
not after hours of copying.
"""

import json
import logging
import os

from image_build.cloud.retry import is_transient
from wire.errors import CloudError

log = logging.getLogger(__name__)

POLICY_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "receiver-ram-policy.json")
# where the policy is documented for users (the message of a failed check names both)
POLICY_NAME = "image_build/receiver-ram-policy.json"

# The codes of an answer that means "this principal may not call that".
DENIED_CODES = frozenset(["Forbidden.RAM", "Forbidden.SubUser", "NoPermission", "Forbidden",
                          "Forbidden.NotAuthorized"])
# CreateSnapshot takes no DryRun (its SDK request has no such field): the first real
# call is its check, and its Forbidden.RAM names the policy file too (cloudimage).
NOT_CHECKABLE = ("CreateSnapshot",)
# One call the receiver never needs: if the role may make it, the role is broader than
# the policy (e.g. AliyunECSFullAccess). Only a hint: a role can be broad elsewhere.
BROADER_PROBE = "StopInstance"


def policy_actions(path=POLICY_FILE):
    """The RAM actions (``ecs:CreateImage``, ...) the policy document allows."""
    with open(path) as f:
        doc = json.load(f)
    out = set()
    for statement in doc["Statement"]:
        if statement.get("Effect") == "Allow":
            actions = statement["Action"]
            out.update([actions] if isinstance(actions, str) else actions)
    return sorted(out)


def dry_run_fields(action, instance_id):
    """The request fields of a DryRun of ``action`` that the API would accept for this
    receiver's own instance (a DryRun still validates the request); None when we know
    no DryRun for it."""
    return {
        "DescribeDisks": dict(instance_id=instance_id),
        "DescribeInstances": dict(instance_ids=json.dumps([instance_id])),
        "DescribeSnapshots": dict(instance_id=instance_id),
        "DescribeImages": dict(image_owner_alias="self"),
        "CreateImage": dict(instance_id=instance_id, image_name="go2aliyun-role-check"),
        "DeleteInstance": dict(instance_id=instance_id, force=True),
        "StopInstance": dict(instance_id=instance_id),
    }.get(action)


class RoleCheck(object):
    """What :func:`check_receiver_role` found, as RAM actions (``ecs:X``)."""

    def __init__(self, allowed, missing, unsure, unchecked, broader):
        self.allowed = allowed        # answered DryRunOperation
        self.missing = missing        # answered Forbidden.RAM (or another DENIED_CODES)
        self.unsure = unsure          # {action: error code} of any other answer
        self.unchecked = unchecked    # no DryRun for these
        self.broader = broader        # allowed beyond the policy

    def warnings(self):
        out = []
        if self.unsure:
            out.append("could not check the RAM role for %s; the step that needs it will "
                       "tell" % ", ".join("%s (%s)" % kv for kv in sorted(self.unsure.items())))
        if self.broader:
            out.append("the receiver's RAM role may also call %s: it is broader than %s "
                       "needs (least privilege: attach only that policy)" % (
                           ", ".join(self.broader), POLICY_NAME))
        return out

    def require(self):
        """Raise ``cloud.ram_role_too_narrow`` naming the missing actions."""
        if self.missing:
            raise CloudError(
                "the receiver's RAM role may not call %s (needed to snapshot the disks, make "
                "the image and release this instance)" % ", ".join(self.missing),
                code="cloud.ram_role_too_narrow",
                hint="attach the policy %s (ECS actions %s) to the instance's RAM role; the "
                     "receiver checks again when it restarts" % (
                         POLICY_NAME, ", ".join(policy_actions())),
                missing=list(self.missing))


def check_receiver_role(cloud, instance_id, path=POLICY_FILE):
    """DryRun every policy action that takes one (and :data:`BROADER_PROBE`) as the
    receiver's role, on its own instance; nothing is made or deleted."""
    allowed, missing, unsure, unchecked = [], [], {}, []
    unreachable = False
    for ram_action in policy_actions(path):
        action = ram_action.split(":", 1)[1]
        if action in NOT_CHECKABLE or dry_run_fields(action, instance_id) is None:
            unchecked.append(ram_action)
            continue
        # once the API failed even after the retries, do not wait for it again
        verdict = "cloud.unavailable" if unreachable else _ask(cloud, action, instance_id)
        unreachable = unreachable or verdict is TRANSIENT
        verdict = "cloud.unavailable" if verdict is TRANSIENT else verdict
        if verdict is True:
            allowed.append(ram_action)
        elif verdict is False:
            missing.append(ram_action)
        else:
            unsure[ram_action] = verdict
    broader = []
    if not unreachable and _ask(cloud, BROADER_PROBE, instance_id) is True:
        broader.append("ecs:" + BROADER_PROBE)
    check = RoleCheck(allowed, missing, unsure, unchecked, broader)
    log.info("RAM role check: allowed %s, missing %s, unsure %s, not checkable %s",
             allowed, missing, sorted(unsure), unchecked)
    return check


TRANSIENT = object()


def _ask(cloud, action, instance_id):
    """True (allowed), False (denied), :data:`TRANSIENT` (no answer even after the
    retries: unreachable, 5xx, throttled) or the error code of any other answer."""
    try:
        cloud.dry_run(action, **dry_run_fields(action, instance_id))
    except CloudError as e:
        code = e.details.get("api_code")
        if code in DENIED_CODES:
            return False
        if is_transient(code, e.details.get("http_status")):
            return TRANSIENT
        return e.code
    return True
