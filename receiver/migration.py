"""The migration's rules: which API call is allowed in which state and what it does to
the migration document, and where a worker step leads. No HTTP here: ``receiver.app``
authenticates and parses a request, then calls one rule; ``receiver.worker`` runs a
step, then calls :func:`end_step`. A rule is written over the document and called with
the ``receiver.state.Store``: check and change happen in one ``Store.update`` (locked).
"""

import functools
import logging

from receiver import state as st
from receiver.state import State
from wire.errors import StateError, UsageError

log = logging.getLogger(__name__)

S = State

# The states each call needs, and what its state.conflict says otherwise.
NEEDS = {
    "manifest": ({S.NEW, S.PLANNED},
                 "the manifest can change only before the disks are prepared"),
    "prepare": ({S.PLANNED}, "prepare needs PLANNED (send the manifest)"),
    "start_sync": ({S.READY_FOR_DATA, S.SYNCING}, "a sync pass cannot start now"),
    "finalize": ({S.READY_FOR_DATA}, "finalize needs READY_FOR_DATA"),
    "retry": ({S.FAILED}, "only a FAILED migration can be retried"),
}

# After the step of a worker state succeeds, where the migration goes.
NEXT = {
    S.PREPARING: S.READY_FOR_DATA,
    S.CONVERTING: S.VERIFYING,
    S.VERIFYING: S.SNAPSHOTTING,
    S.SNAPSHOTTING: S.IMAGE_READY,
    S.IMAGE_READY: S.RELEASED,
}


class NotFound(UsageError):
    code = "not_found"
    http_status = 404


def _under_lock(rule):
    """``rule(doc, *args)`` becomes ``rule(store, *args)``, run in one ``store.update``."""

    @functools.wraps(rule)
    def update(store, *args, **kwargs):
        return store.update(lambda doc: rule(doc, *args, **kwargs))

    return update


def check_call(doc, call):
    """Raise ``state.conflict`` unless ``call`` (a key of NEEDS) is allowed now."""
    states, why = NEEDS[call]
    if State(doc["state"]) not in states:
        raise st.conflict(doc["state"], why)


def _move(doc, target, message="queued", percent=0):
    st.move(doc, target)
    doc["progress"] = {"percent": percent, "message": message}


def target_modules(config):
    """The rsync modules of ``--target-root`` folders, as the session answer shows them."""
    roots = config.get("target_roots") or {}
    return {n: {"module": n, "path": p} for n, p in sorted(roots.items())}


@_under_lock
def add_client(doc, serial):
    """Record a client certificate this receiver issued (``POST /v1/session``)."""
    doc.setdefault("_clients", []).append(serial)
    del doc["_clients"][:-20]  # the newest 20


def knows_client(doc, serial):
    return serial in (doc.get("_clients") or [])


def set_manifest(store, manifest, plan):
    """NEW/PLANNED -> PLANNED, keeping the (validated) manifest and plan."""

    def fn(doc):
        check_call(doc, "manifest")
        _move(doc, S.PLANNED, "plan received")
        store.write("manifest.json", manifest)
        store.write("plan.json", plan)

    return store.update(fn)


@_under_lock
def prepare(doc):
    """PLANNED -> PREPARING: the worker's job."""
    check_call(doc, "prepare")
    _move(doc, S.PREPARING)


@_under_lock
def start_sync(doc, final):
    """Open sync pass n+1 (SYNCING); a pass never reported finished is marked abandoned.
    Returns ``{pass, final, modules}``."""
    check_call(doc, "start_sync")
    n = len(doc["passes"]) + 1
    _move(doc, S.SYNCING, "sync pass %d running" % n)
    now = st.now_iso()
    for p in doc["passes"]:
        if p.get("finished_at") is None and not p.get("abandoned_at"):
            p["abandoned_at"] = now
    doc["passes"].append({"pass": n, "final": final, "started_at": now,
                          "finished_at": None})
    return {"pass": n, "final": final, "modules": doc.get("modules") or {}}


@_under_lock
def finish_sync(doc, n, stats):
    """Close the running pass ``n`` with its stats: the final pass (cutover) queues
    CONVERTING, another goes back to READY_FOR_DATA. Reporting a pass twice is a no-op."""
    passes = {p["pass"]: p for p in doc["passes"]}
    if n not in passes:
        raise NotFound("there is no sync pass %d (passes: %d)" % (n, len(passes)))
    p = passes[n]
    if p.get("finished_at") is not None:
        return
    if doc["state"] != S.SYNCING.value or n != len(doc["passes"]):
        raise st.conflict(doc["state"], "sync pass %d is not the running pass" % n)
    p["finished_at"] = st.now_iso()
    p["stats"] = stats
    if p.get("final"):
        _move(doc, S.CONVERTING)
    else:
        _move(doc, S.READY_FOR_DATA, "sync pass %d finished" % n, percent=100)


@_under_lock
def finalize(doc):
    """Cutover without a final pass: READY_FOR_DATA -> CONVERTING, once a pass finished."""
    check_call(doc, "finalize")
    if not any(p.get("finished_at") for p in doc["passes"]):
        raise StateError(
            "no sync pass has finished yet; there is nothing to convert",
            hint="push the data first (POST /v1/migration/syncs)",
            state=doc["state"], allowed=st.CALLS[State(doc["state"])])
    _move(doc, S.CONVERTING)


@_under_lock
def retry(doc):
    """FAILED -> the state of the step that failed, to run it again."""
    check_call(doc, "retry")
    _move(doc, State((doc.get("error") or {}).get("step") or doc["step"]), "retry queued")


@_under_lock
def end_step(doc, current, error=None):
    """After the worker ran the step of ``current``: FAILED with ``error``'s code, or
    NEXT[current]. Returns the state the migration is in (left alone if it moved)."""
    if doc["state"] != current.value:  # someone moved it meanwhile; leave it
        return State(doc["state"])
    if error is not None:
        st.fail(doc, current, error.code, str(error))
    else:
        _move(doc, NEXT[current], "%s done" % current.value,
              percent=100 if NEXT[current] is S.RELEASED else 0)
    return State(doc["state"])
