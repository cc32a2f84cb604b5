import os

import pytest

from receiver import state as st
from receiver import worker
from receiver.state import State
from tests.receiver.conftest import sample_plan
from wire.errors import DiskError


def _to_preparing(store, plan):
    store.write("plan.json", plan)
    store.transition(State.PLANNED)
    store.transition(State.PREPARING)


def test_preparing_maps_target_roots_to_modules(store, roots):
    _to_preparing(store, sample_plan(data_disks=(1,)))
    assert worker.run_step(store) is State.READY_FOR_DATA
    doc = store.load()
    assert doc["state"] == "READY_FOR_DATA"
    assert doc["modules"] == {
        "system": {"module": "system", "path": roots["system"]},
        "disk1": {"module": "disk1", "path": roots["disk1"]},
    }
    assert os.path.isdir(roots["system"]) and os.path.isdir(roots["disk1"])
    # nothing more to do in READY_FOR_DATA
    assert worker.run_step(store) is None


def test_preparing_fails_clearly_when_a_disk_has_no_target_root(store, roots):
    _to_preparing(store, sample_plan(data_disks=(1, 2)))
    assert worker.run_step(store) is State.FAILED
    err = store.load()["error"]
    assert err["step"] == "PREPARING" and err["code"] == "disk.missing"
    assert "disk2" in err["message"] and "--target-root disk2=DIR" in err["message"]


def test_plan_folder_modules_is_pure():
    assert worker.module_names_for_plan({"data_disks": [{"index": 3}, {"index": 1}]}) == [
        "system", "disk3", "disk1"]
    with pytest.raises(DiskError):
        worker.plan_folder_modules({"disk1": "/x"}, {})


def test_conversion_is_honestly_not_available(store, roots):
    _to_preparing(store, sample_plan())
    worker.run_step(store)
    store.transition(State.CONVERTING)
    assert worker.run_step(store) is State.FAILED
    doc = store.load()
    assert doc["state"] == "FAILED" and doc["step"] == "CONVERTING"
    assert doc["error"]["code"] == "conversion.unavailable"
    assert "not available in this build" in doc["error"]["message"]
    # retry runs the same step again, and it fails again: no pretend success
    store.transition(State.CONVERTING)
    assert worker.run_step(store) is State.FAILED


def test_a_crashing_step_becomes_failed_without_traceback(store, roots, monkeypatch):
    def boom(ctx):
        ctx.progress(40, "half way")
        raise KeyError("secret-internal-detail")

    monkeypatch.setitem(worker.STEPS, State.PREPARING, boom)
    _to_preparing(store, sample_plan())
    assert worker.run_step(store) is State.FAILED
    err = store.load()["error"]
    assert err["code"] == "internal" and "KeyError" in err["message"]
    assert "Traceback" not in err["message"]


def test_registered_steps_chain_to_released(store, roots, monkeypatch):
    seen = []
    for s in (State.CONVERTING, State.VERIFYING, State.SNAPSHOTTING, State.IMAGE_READY):
        monkeypatch.setitem(worker.STEPS, s, lambda ctx, s=s: seen.append(ctx.state))
    _to_preparing(store, sample_plan())
    worker.run_step(store)
    store.transition(State.CONVERTING)
    while worker.run_step(store) not in (None, State.RELEASED):
        pass
    assert seen == [State.CONVERTING, State.VERIFYING, State.SNAPSHOTTING, State.IMAGE_READY]
    assert store.load()["state"] == "RELEASED"


def test_step_that_finds_state_moved_leaves_it(store, roots, monkeypatch):
    def moved(ctx):
        def fn(doc):
            st.fail(doc, State.PREPARING, "x", "operator")
        ctx.store.update(fn)

    monkeypatch.setitem(worker.STEPS, State.PREPARING, moved)
    _to_preparing(store, sample_plan())
    assert worker.run_step(store) is State.FAILED
    assert store.load()["error"]["code"] == "x"


def test_a_step_interrupted_by_a_stop_is_not_a_failure(store, roots, monkeypatch):
    """SIGTERM to the worker's group kills the step's commands: the step fails, but
    because the worker is stopping the state stays, to run the step again after the
    restart; without a stop the same failure is recorded."""
    stopping = {"now": False}

    def killed(ctx):
        ctx.progress(30, "writing the partition table")
        raise DiskError("sfdisk failed with exit code -15", code="command.failed")

    monkeypatch.setitem(worker.STEPS, State.PREPARING, killed)
    _to_preparing(store, sample_plan())
    stopping["now"] = True
    assert worker.run_step(store, stopping=lambda: stopping["now"]) is None
    doc = store.load()
    assert doc["state"] == "PREPARING" and doc["error"] is None
    stopping["now"] = False
    assert worker.run_step(store, stopping=lambda: stopping["now"]) is State.FAILED
    assert store.load()["error"]["code"] == "command.failed"


def test_a_second_worker_waits_for_the_first(store, roots):
    """One worker per state folder: a leftover worker (its serve died) holds the lock;
    a new one does not start a step until it is gone, and stops on request meanwhile."""
    import fcntl
    import threading

    fd = os.open(os.path.join(store.dir, worker.WORKER_LOCK), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    stop = {"now": False}
    got = []
    t = threading.Thread(target=lambda: got.append(
        worker._hold_worker_lock(store, stop, 0.05)))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # waiting
    os.close(fd)  # the first worker ends
    t.join(5)
    assert not t.is_alive() and got[0] is not None
    os.close(got[0])
    fd = os.open(os.path.join(store.dir, worker.WORKER_LOCK), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    stop["now"] = True
    assert worker._hold_worker_lock(store, stop, 0.05) is None
    os.close(fd)


def test_a_waiting_step_ends_early_on_a_stop_and_runs_again(store, roots, monkeypatch):
    """A step that waits (the aliyun release grace of 600 s) must not keep a stopped
    worker alive: the wait ends as soon as the worker stops, the state stays."""
    import threading
    import time

    stop = threading.Event()
    monkeypatch.setitem(worker.STEPS, State.PREPARING, lambda ctx: ctx.wait(600))
    _to_preparing(store, sample_plan())
    threading.Timer(0.3, stop.set).start()
    t = time.monotonic()
    assert worker.run_step(store, stopping=stop.is_set) is None
    assert time.monotonic() - t < 60
    doc = store.load()
    assert doc["state"] == "PREPARING" and doc["error"] is None
    # without a stop, a short wait simply ends and the step is done
    monkeypatch.setitem(worker.STEPS, State.PREPARING, lambda ctx: ctx.wait(0.05))
    assert worker.run_step(store, stopping=lambda: False) is State.READY_FOR_DATA
