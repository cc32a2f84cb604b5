"""The migration this receiver serves: its states, allowed transitions, and the files in
the state folder that make it survive a restart of any process.

Files (all written atomically: temp file, fsync, rename; guarded by ``.lock``):

* ``migration.json``: the migration document (API.md) plus private keys starting
  with ``_`` (issued client certificate serials, the current job);
* ``manifest.json``, ``plan.json``: what the source sent;
* ``config.json``: what ``serve`` was started with (target roots, ports, address);
* ``tokens.json``: hashed one-time tokens (see ``receiver.tokens``);
* ``status.json`` (0600): token, address, fingerprint for the operator.
"""

import contextlib
import datetime
import enum
import errno
import fcntl
import logging
import os
import secrets

from wire import files
from wire.errors import Go2AliyunError, StateError

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    NEW = "NEW"
    PLANNED = "PLANNED"
    PREPARING = "PREPARING"
    READY_FOR_DATA = "READY_FOR_DATA"
    SYNCING = "SYNCING"
    CONVERTING = "CONVERTING"
    VERIFYING = "VERIFYING"
    SNAPSHOTTING = "SNAPSHOTTING"
    IMAGE_READY = "IMAGE_READY"
    RELEASED = "RELEASED"
    FAILED = "FAILED"


S = State

# Every allowed move. Anything else is refused with state.conflict.
TRANSITIONS = {
    S.NEW: {S.PLANNED},
    S.PLANNED: {S.PLANNED, S.PREPARING},
    S.PREPARING: {S.READY_FOR_DATA, S.FAILED},
    # A sync pass opens; finalize goes straight to conversion.
    S.READY_FOR_DATA: {S.SYNCING, S.CONVERTING},
    # A pass ends (READY_FOR_DATA, or CONVERTING for the final one); a pass that was
    # never reported finished (the source was killed) is replaced by a new one.
    S.SYNCING: {S.READY_FOR_DATA, S.CONVERTING, S.SYNCING},
    S.CONVERTING: {S.VERIFYING, S.FAILED},
    S.VERIFYING: {S.SNAPSHOTTING, S.FAILED},
    S.SNAPSHOTTING: {S.IMAGE_READY, S.FAILED},
    S.IMAGE_READY: {S.RELEASED, S.FAILED},
    S.RELEASED: set(),
    # retry: back to the step that failed (checked against error.step).
    S.FAILED: {S.PREPARING, S.CONVERTING, S.VERIFYING, S.SNAPSHOTTING, S.IMAGE_READY},
}

# The states in which the worker has work to do (a step function runs).
WORKER_STATES = (S.PREPARING, S.CONVERTING, S.VERIFYING, S.SNAPSHOTTING, S.IMAGE_READY)

# Which API calls make sense in each state (named in state.conflict errors).
CALLS = {
    S.NEW: ["PUT /v1/migration/manifest"],
    S.PLANNED: ["PUT /v1/migration/manifest", "POST /v1/migration/prepare"],
    S.PREPARING: ["GET /v1/migration (wait)"],
    S.READY_FOR_DATA: ["POST /v1/migration/syncs", "POST /v1/migration/finalize"],
    S.SYNCING: ["POST /v1/migration/syncs/<n>/finished", "POST /v1/migration/syncs"],
    S.CONVERTING: ["GET /v1/migration (wait)"],
    S.VERIFYING: ["GET /v1/migration (wait)"],
    S.SNAPSHOTTING: ["GET /v1/migration (wait)"],
    S.IMAGE_READY: ["GET /v1/migration (wait)"],
    S.RELEASED: ["GET /v1/migration"],
    S.FAILED: ["POST /v1/migration/retry"],
}


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_transition(current, target):
    """Raise ``state.conflict`` unless ``current -> target`` is allowed."""
    if State(target) not in TRANSITIONS[State(current)]:
        raise conflict(current, "it cannot go to %s" % State(target).value)


def conflict(current, what):
    current = State(current)
    return StateError(
        "the migration is %s; %s" % (current.value, what),
        hint="calls allowed now: %s" % ", ".join(CALLS[current]),
        state=current.value, allowed=CALLS[current],
    )


# --- files -----------------------------------------------------------------------

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NoSpace(Go2AliyunError):
    """The state folder's filesystem is full: nothing was changed (every write is a
    temp file renamed over the old one), the call can be repeated once space is freed."""

    code = "state.no_space"
    exit_code = 9
    http_status = 507


def no_space_error(path):
    folder = os.path.dirname(os.path.abspath(path))
    return NoSpace(
        "no space left on the device of the receiver's state folder %s (writing %s); "
        "nothing was changed" % (folder, os.path.basename(path)),
        code="state.no_space",
        hint="free space on that filesystem (df -h %s), then run `go2aliyun migrate` "
             "again: the migration continues where it stood" % folder)


def write_json_atomic(path, data, mode=0o600):
    """Atomic, fsync'd (folder too); a full disk becomes :class:`NoSpace`."""
    try:
        files.write_json_atomic(path, data, mode=mode, sync_dir=True)
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS:
            raise no_space_error(path) from e
        raise


def read_json(path, default=None):
    return files.read_json(path, default, code="state.corrupt",
                           hint="restore it from a backup or remove the state folder")


@contextlib.contextmanager
def locked(state_dir):
    """Hold the state folder's lock (between gunicorn workers, the worker and the CLI)."""
    fd = os.open(os.path.join(state_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def new_migration_id():
    return "m-%s-%s" % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d"),
                        secrets.token_hex(3))


def new_document(migration_id=None):
    return {
        "id": migration_id or new_migration_id(),
        "state": S.NEW.value,
        "step": S.NEW.value,
        "updated_at": now_iso(),
        "progress": {"percent": 0, "message": "waiting for the manifest"},
        "error": None,
        "passes": [],
        "modules": {},
        "image": None,
        "plan_review": None,
        "_clients": [],
        "_history": [],
    }


def public(doc):
    """The migration document as the API shows it (no private keys)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


class Store(object):
    """The state folder. Every read-modify-write goes through :meth:`update`."""

    def __init__(self, state_dir):
        self.dir = os.path.abspath(state_dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def ensure(self):
        """Create the folder and the migration on first start; return the document."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with locked(self.dir):
            doc = read_json(self.path("migration.json"))
            if doc is None:
                doc = new_document()
                write_json_atomic(self.path("migration.json"), doc)
                log.info("new migration %s", doc["id"])
            return doc

    def load(self):
        doc = read_json(self.path("migration.json"))
        if doc is None:
            raise Go2AliyunError(
                "no migration in %s" % self.dir, code="state.missing",
                hint="start 'go2aliyun-receiver serve --state %s' first" % self.dir,
            )
        return doc

    def update(self, fn):
        """Call ``fn(doc)`` under the lock; it changes ``doc`` in place (or raises).
        The result is saved atomically and returned."""
        with locked(self.dir):
            doc = self.load()
            result = fn(doc)
            doc["updated_at"] = now_iso()
            write_json_atomic(self.path("migration.json"), doc)
        return doc if result is None else result

    def transition(self, target, **changes):
        """Move to ``target`` if allowed; apply ``changes`` to the document."""
        target = State(target)

        def fn(doc):
            move(doc, target)
            doc.update(changes)

        return self.update(fn)

    def read(self, name, default=None):
        return read_json(self.path(name), default)

    def write(self, name, data, mode=0o600):
        write_json_atomic(self.path(name), data, mode)

    def config(self):
        return self.read("config.json", {}) or {}


def move(doc, target):
    """Change ``doc``'s state in place (checked), keeping ``step`` and history true."""
    target = State(target)
    check_transition(doc["state"], target)
    before = doc["state"]
    doc["state"] = target.value
    if target is not S.FAILED:
        doc["step"] = target.value
        doc["error"] = None
    doc.setdefault("_history", []).append({"from": before, "to": target.value, "at": now_iso()})
    del doc["_history"][:-50]
    log.info("migration %s: %s -> %s", doc.get("id"), before, target.value)


def fail(doc, step, code, message):
    """Put ``doc`` in FAILED with the step and the reason."""
    move(doc, S.FAILED)
    doc["step"] = State(step).value
    doc["error"] = {"step": State(step).value, "code": code, "message": message}
