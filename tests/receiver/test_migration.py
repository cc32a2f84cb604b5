"""The migration's rules without HTTP: receiver.migration over a state folder."""

import sys

import pytest

from receiver import migration, worker
from receiver import state as st
from receiver.state import State
from wire import runner
from wire.errors import ConversionError, StateError


def at(store, *states):
    for s in states:
        store.transition(s)


@pytest.mark.parametrize("call,state", [(c, s) for c, (ok, _) in migration.NEEDS.items()
                                        for s in State if s not in ok])
def test_a_call_in_the_wrong_state_is_a_conflict_naming_the_allowed_calls(call, state):
    with pytest.raises(StateError) as e:
        migration.check_call({"state": state.value}, call)
    assert e.value.code == "state.conflict" and state.value in str(e.value)
    assert e.value.to_dict()["details"]["allowed"] == st.CALLS[state]


def test_manifest_until_prepare(store):
    assert migration.set_manifest(store, {"m": 1}, {"p": 2})["state"] == "PLANNED"
    assert store.read("plan.json") == {"p": 2} and store.read("manifest.json") == {"m": 1}
    assert migration.prepare(store)["state"] == "PREPARING"
    with pytest.raises(StateError):
        migration.set_manifest(store, {}, {})
    assert store.read("plan.json") == {"p": 2}


def test_sync_passes_are_recorded_and_the_final_one_is_the_cutover(store):
    at(store, State.PLANNED, State.PREPARING, State.READY_FOR_DATA)
    with pytest.raises(StateError, match="no sync pass has finished"):
        migration.finalize(store)
    assert migration.start_sync(store, False) == {"pass": 1, "final": False, "modules": {}}
    assert migration.start_sync(store, False)["pass"] == 2  # pass 1 was never reported
    doc = migration.finish_sync(store, 2, {"system": {"bytes": 5, "files": 1}})
    assert doc["state"] == "READY_FOR_DATA" and doc["progress"]["percent"] == 100
    assert doc["passes"][0]["abandoned_at"] and doc["passes"][1]["stats"]["system"]["files"] == 1
    assert migration.finish_sync(store, 2, {})["passes"][1]["stats"]  # twice: no change
    with pytest.raises(StateError, match="sync pass 1 is not the running pass"):
        migration.finish_sync(store, 1, {})
    with pytest.raises(migration.NotFound):
        migration.finish_sync(store, 9, {})
    migration.start_sync(store, True)
    assert migration.finish_sync(store, 3, {})["state"] == "CONVERTING"


def test_finalize_then_a_failed_step_is_retried_and_a_step_leads_to_next(store):
    at(store, State.PLANNED, State.PREPARING)
    assert migration.end_step(store, State.PREPARING) is State.READY_FOR_DATA
    assert migration.end_step(store, State.PREPARING) is State.READY_FOR_DATA  # left alone
    migration.finish_sync(store, migration.start_sync(store, False)["pass"], {})
    assert migration.finalize(store)["state"] == "CONVERTING"
    assert migration.end_step(store, State.CONVERTING, ConversionError("no")) is State.FAILED
    assert store.load()["error"]["step"] == "CONVERTING"
    assert migration.retry(store)["state"] == "CONVERTING"
    assert set(worker.STEPS) == set(migration.NEXT) == set(st.WORKER_STATES)


@pytest.mark.commands
def test_the_rules_and_the_worker_load_without_flask():
    code = "import sys, receiver.migration, receiver.worker; assert 'flask' not in sys.modules"
    runner.run([sys.executable, "-c", code])
