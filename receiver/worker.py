"""The worker: a separate process that runs the long steps of the migration.

The API never does long work: it moves the migration into a worker state
(``PREPARING``, ``CONVERTING``, ``VERIFYING``, ``SNAPSHOTTING``, ``IMAGE_READY``) and
that state is the job. The worker polls the state folder, runs the step function of
the current state (``STEPS``) and moves the migration to the next state, or to
``FAILED`` with the step and the reason. Because the job is the persisted state, a
worker killed in the middle of a step runs the step again after a restart: step
functions must be idempotent.

A step is ``fn(ctx) -> None`` and reports with ``ctx.progress(percent, message)``;
``receiver.migration.end_step`` then moves the migration. The steps live in
``receiver.steps``; with ``--target-root`` folders PREPARING only checks the folders and
CONVERTING fails honestly with ``conversion.unavailable`` (a folder cannot be made
bootable), so nothing after it ever pretends success.
"""

import contextlib
import fcntl
import logging
import os
import signal
import time
import traceback

from receiver import migration, steps
from receiver.state import State
from wire.errors import ConversionError, DiskError, Go2AliyunError

log = logging.getLogger(__name__)


class StepContext(object):
    """What a step gets: the store, the serve config, the migration, the manifest and
    plan, and a progress reporter."""

    def __init__(self, store, doc, stopping=None):
        self.store = store
        self.doc = doc
        self.config = store.config()
        self.state = State(doc["state"])
        self._stopping = stopping or (lambda: False)

    def wait(self, seconds, step=0.5):
        """Sleep ``seconds``, but end early when the worker is being stopped (then
        raise: the step did not finish, it runs again after the restart)."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(step, left))
        raise Go2AliyunError("the worker is stopping", code="worker.stopping")

    @property
    def manifest(self):
        return self.store.read("manifest.json", {})

    @property
    def plan(self):
        return self.store.read("plan.json", {})

    def progress(self, percent, message):
        percent = max(0, min(100, int(percent)))

        def fn(doc):
            if doc["state"] != self.state.value:
                return
            doc["progress"] = {"percent": percent, "message": str(message)}

        self.store.update(fn)

    def set(self, **fields):
        """Save public fields of the migration document (modules, plan_review, image)."""
        self.store.update(lambda doc: doc.update(fields))


# --- the steps of this build -------------------------------------------------------


def module_names_for_plan(plan):
    """The rsync modules a plan needs: ``system`` plus ``disk<index>`` per data disk."""
    names = ["system"]
    for d in (plan or {}).get("data_disks") or []:
        if isinstance(d, dict) and "index" in d:
            names.append("disk%d" % int(d["index"]))
    return names


def plan_folder_modules(target_roots, plan):
    """Pure: the modules document for folder target roots, or a DiskError naming the
    disk that has no target root."""
    modules = {}
    for name in module_names_for_plan(plan):
        if name not in target_roots:
            raise DiskError(
                "the plan needs a target for %s but the receiver has no target root %r"
                % (name, name),
                code="disk.missing",
                hint="start the receiver with --target-root %s=DIR" % name,
            )
        modules[name] = {"module": name, "path": target_roots[name]}
    return modules


def prepare_folders(ctx):
    """PREPARING for ``--target-root`` folders: check each one and open its module."""
    roots = ctx.config.get("target_roots") or {}
    modules = plan_folder_modules(roots, ctx.plan)
    for i, (name, m) in enumerate(sorted(modules.items())):
        ctx.progress(100 * i // max(1, len(modules)), "preparing %s (%s)" % (name, m["path"]))
        path = m["path"]
        os.makedirs(path, exist_ok=True)
        if not os.path.isdir(path):
            raise DiskError("target root %s=%s is not a folder" % (name, path),
                            code="disk.missing", hint="give a folder to --target-root")
        if not os.access(path, os.W_OK):
            raise DiskError("target root %s=%s is not writable" % (name, path),
                            code="disk.not_writable", hint="fix its permissions")
    ctx.set(modules=modules)
    ctx.progress(100, "ready for data")


def conversion_unavailable(ctx):
    raise ConversionError(
        "conversion not available in this build: the copy was received but cannot be "
        "made bootable or imaged yet",
        code="conversion.unavailable",
        hint="the data stays in the target roots; a later version converts it",
    )


def prepare_targets(ctx):
    """PREPARING: real disks when the receiver was given ``--disk``, else folders."""
    if steps.uses_disks(ctx.config):
        return steps.prepare_disks(ctx)
    return prepare_folders(ctx)


def convert(ctx):
    """CONVERTING on real disks; folder targets cannot be made bootable."""
    if steps.uses_disks(ctx.config):
        return steps.convert_disks(ctx)
    return conversion_unavailable(ctx)


# The step run in each worker state; receiver.migration.NEXT says where it leads.
STEPS = {
    State.PREPARING: prepare_targets,
    State.CONVERTING: convert,
    State.VERIFYING: steps.verify_boot,
    State.SNAPSHOTTING: steps.make_image,
    State.IMAGE_READY: steps.release,
}


# --- running -----------------------------------------------------------------------


def run_step(store, doc=None, stopping=None):
    """Run the step of the current state once. Returns the state it ended in, or
    None when there was nothing to do. A step that fails because the worker is being
    stopped (``stopping()`` is true: SIGTERM killed its commands) is not a failure:
    the state stays, and the step runs again after the restart."""
    doc = doc or store.load()
    current = State(doc["state"])
    if current not in migration.NEXT:
        return None
    fn = STEPS.get(current)
    ctx = StepContext(store, doc, stopping)
    log.info("step %s starts", current.value)
    try:
        if fn is None:
            raise Go2AliyunError("step %s is not available in this build" % current.value,
                                 code="step.unavailable")
        fn(ctx)
    except Exception as e:  # noqa: BLE001 - a step's bug must become FAILED, not a crash
        known = isinstance(e, Go2AliyunError)
        if stopping is not None and stopping():
            log.warning("step %s interrupted by a stop (%s); it runs again after the "
                        "restart", current.value, e if known else type(e).__name__)
            return None
        if known:
            log.error("step %s failed: %s", current.value, e)
        else:
            log.error("step %s crashed:\n%s", current.value, traceback.format_exc())
            e = Go2AliyunError("internal error in step %s (%s); see the receiver log"
                               % (current.value, type(e).__name__), code="internal")
        return migration.end_step(store, current, error=e)
    return migration.end_step(store, current)


WORKER_LOCK = "worker.lock"


def _hold_worker_lock(store, stop, interval):
    """One worker per state folder: a worker left over from a serve that died (it got
    SIGTERM and still ends its step) must finish before a new one starts a step."""
    fd = os.open(os.path.join(store.dir, WORKER_LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError:
            if stop["now"]:
                os.close(fd)
                return None
            if not waited:
                log.warning("another worker still runs on %s; waiting for it", store.dir)
                waited = True
            time.sleep(interval)


def serve(store, interval=0.5, once=False):
    """The worker process's loop: run whatever step the state asks for.

    SIGTERM (serve stopping, or serve gone: PR_SET_PDEATHSIG) ends the loop; when the
    worker leads its own process group (as serve starts it), the commands of a running
    step get the SIGTERM too, so the step ends now rather than minutes later, and is
    run again after the restart (see :func:`run_step`)."""
    stop = {"now": False}

    def on_term(signum, frame):
        if not stop["now"] and os.getpgrp() == os.getpid():
            stop["now"] = True
            with contextlib.suppress(OSError):
                os.killpg(os.getpgrp(), signal.SIGTERM)  # our commands; we ignore it
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    lock = _hold_worker_lock(store, stop, interval)
    if lock is None:
        return None
    log.info("worker up for %s", store.dir)
    try:
        while not stop["now"]:
            try:
                ended = run_step(store, stopping=lambda: stop["now"])
            except Go2AliyunError as e:  # e.g. state.no_space: try again, not in a spin
                log.error("worker: %s", e)
                if not once:
                    time.sleep(max(interval, 5))
                ended = None
            if once:
                return ended
            if ended is None:
                time.sleep(interval)
    finally:
        os.close(lock)
    log.info("worker stops")
    return None
