"""Scenario 7: how long the receiver spends in PREPARING, CONVERTING and VERIFYING.

One ``go2aliyun migrate --cutover`` of the sample server (tests/helpers/e2e.py: Debian
12 on loop disks, the ``local`` provider, a qemu verification boot) and the times read
from the state history the receiver keeps in ``migration.json`` (``_history``: every
transition with its time). One run: it boots a VM under TCG, which takes minutes.
"""

import datetime
import time

from tests.helpers import e2e


def _when(text):
    text = text.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def durations(history):
    """Pure: seconds spent in each state, from ``_history`` ([{from, to, at}])."""
    out = {}
    for i, h in enumerate(history):
        if i + 1 < len(history):
            spent = _when(history[i + 1]["at"]) - _when(h["at"])
            out[h["to"]] = round(out.get(h["to"], 0) + spent, 2)
    return out


def measure(base, log):
    began = time.time()
    with e2e.world(base) as w:
        r = w.migrate("--cutover")
        w.receiver.stop()
        if r.returncode != 0:
            raise RuntimeError("the cutover failed: %s" % w.explain(r)[-1500:])
        doc = w.receiver.document()
    spent = durations(doc.get("_history") or [])
    log("  receiver phases: %s" % spent)
    res = {k: spent.get(k) for k in ("PREPARING", "SYNCING", "CONVERTING", "VERIFYING",
                                     "SNAPSHOTTING")}
    res["all_states"] = spent
    res["cutover_seconds"] = round(time.time() - began, 1)
    return res
