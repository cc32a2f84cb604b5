import itertools
import json
import os
import stat

import pytest

from receiver import state as st
from receiver.state import State
from tests.receiver.conftest import read_text
from wire.errors import StateError

ALLOWED = {
    ("NEW", "PLANNED"), ("PLANNED", "PLANNED"), ("PLANNED", "PREPARING"),
    ("PREPARING", "READY_FOR_DATA"), ("PREPARING", "FAILED"),
    ("READY_FOR_DATA", "SYNCING"), ("READY_FOR_DATA", "CONVERTING"),
    ("SYNCING", "READY_FOR_DATA"), ("SYNCING", "CONVERTING"), ("SYNCING", "SYNCING"),
    ("CONVERTING", "VERIFYING"), ("CONVERTING", "FAILED"),
    ("VERIFYING", "SNAPSHOTTING"), ("VERIFYING", "FAILED"),
    ("SNAPSHOTTING", "IMAGE_READY"), ("SNAPSHOTTING", "FAILED"),
    ("IMAGE_READY", "RELEASED"), ("IMAGE_READY", "FAILED"),
    ("FAILED", "PREPARING"), ("FAILED", "CONVERTING"), ("FAILED", "VERIFYING"),
    ("FAILED", "SNAPSHOTTING"), ("FAILED", "IMAGE_READY"),
}


@pytest.mark.parametrize("a,b", list(itertools.product([s.value for s in State], repeat=2)))
def test_every_transition_is_allowed_or_refused_with_state_conflict(a, b):
    if (a, b) in ALLOWED:
        st.check_transition(a, b)
        return
    with pytest.raises(StateError) as e:
        st.check_transition(a, b)
    assert e.value.code == "state.conflict" and e.value.http_status == 409
    assert a in e.value.message and b in e.value.message
    assert e.value.details["state"] == a
    assert e.value.details["allowed"] == st.CALLS[State(a)]


def test_migration_persists_atomically_and_privately(tmp_path):
    d = str(tmp_path / "s")
    store = st.Store(d)
    doc = store.ensure()
    assert doc["state"] == "NEW" and doc["id"].startswith("m-")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    store.transition(State.PLANNED)
    store.transition(State.PREPARING)
    # a new Store (another process after a restart) sees the same thing
    again = st.Store(d)
    assert again.ensure()["id"] == doc["id"]
    loaded = again.load()
    assert loaded["state"] == loaded["step"] == "PREPARING"
    assert [h["to"] for h in loaded["_history"]] == ["PLANNED", "PREPARING"]
    p = store.path("migration.json")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert not [n for n in os.listdir(d) if ".tmp" in n]


def test_refused_update_changes_nothing(tmp_path):
    store = st.Store(str(tmp_path))
    store.ensure()
    before = read_text(store.path("migration.json"))
    with pytest.raises(StateError):
        store.transition(State.SYNCING)
    assert read_text(store.path("migration.json")) == before


def test_fail_keeps_step_and_reason_and_public_hides_private_keys(tmp_path):
    store = st.Store(str(tmp_path))
    store.ensure()
    store.transition(State.PLANNED)
    store.transition(State.PREPARING)

    def fn(doc):
        st.fail(doc, State.PREPARING, "disk.too_small", "disk1 is 5 GiB, needs 8")

    doc = store.update(fn)
    assert doc["state"] == "FAILED" and doc["step"] == "PREPARING"
    assert doc["error"] == {"step": "PREPARING", "code": "disk.too_small",
                            "message": "disk1 is 5 GiB, needs 8"}
    pub = st.public(doc)
    assert "_clients" not in pub and "_history" not in pub
    assert set(pub) == {"id", "state", "step", "updated_at", "progress", "error", "passes",
                        "modules", "image", "plan_review"}
    store.transition(State.PREPARING)
    assert store.load()["error"] is None


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    store = st.Store(str(tmp_path))
    store.ensure()
    with open(store.path("migration.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(Exception) as e:
        store.load()
    assert getattr(e.value, "code", None) == "state.corrupt"
    assert "migration.json" in str(e.value)


def test_concurrent_updates_do_not_lose_writes(tmp_path):
    import threading

    store = st.Store(str(tmp_path))
    store.ensure()

    def bump():
        for _ in range(20):
            def fn(doc):
                doc["_n"] = doc.get("_n", 0) + 1
            st.Store(str(tmp_path)).update(fn)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(read_text(store.path("migration.json")))["_n"] == 80
