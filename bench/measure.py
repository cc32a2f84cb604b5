"""Run one command and measure everything it starts: ``python -m bench.measure OUT -- ARGV``.

The wrapper makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so processes
orphaned inside the tree (rsync's connect program outlives rsync by a moment) are reaped
here and their CPU time lands in our ``RUSAGE_CHILDREN``. While the command runs, every
``INTERVAL`` the tree's processes are read from ``/proc``: the sum of their RSS (the
peak is "the memory the source needs") and each one's CPU time by command name (which
process costs what). Writes JSON to OUT; exits with the command's exit code.
"""

import ctypes
import json
import os
import resource
import sys
import threading
import time

from wire import runner

INTERVAL = 0.1
PR_SET_CHILD_SUBREAPER = 36
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_stat(pid):
    """(ppid, comm, utime+stime seconds, rss bytes) of ``pid`` from /proc, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    return parse_stat(text)


def parse_stat(text):
    """Pure: one /proc/PID/stat line -> (ppid, comm, cpu seconds, rss bytes)."""
    lpar, rpar = text.index("("), text.rindex(")")
    comm = text[lpar + 1:rpar]
    rest = text[rpar + 2:].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24
    ppid = int(rest[1])
    cpu = (int(rest[11]) + int(rest[12])) / float(TICK)
    rss = int(rest[21]) * PAGE
    return ppid, comm, cpu, rss


def tree(root):
    """{pid: stat} of ``root`` and its descendants."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = read_stat(int(name))
            if s:
                stats[int(name)] = s
    out = {}
    todo = [root]
    children = {}
    for pid, s in stats.items():
        children.setdefault(s[0], []).append(pid)
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid]
        todo.extend(children.get(pid, []))
    return out


def label(pid, comm):
    """``comm``, and for Python the module it runs (``python3 -m X`` -> ``python3:X``)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return comm
    if "-m" in args[:-1]:
        return "%s:%s" % (comm, args[args.index("-m") + 1])
    return comm


def tree_cpu(root):
    """CPU seconds of ``root``'s tree so far, reaped children included (cutime, cstime)."""
    total = 0.0
    for pid in tree(root):
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in rest[11:15]) / float(TICK)
    return total


def main(argv):
    out_path = argv[0]
    cmd = argv[argv.index("--") + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me = os.getpid()
    began = time.time()
    proc = runner.start(cmd)
    peak = {"rss": 0, "procs": 0}
    cpu_by_pid = {}
    names = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            t = tree(me)
            t.pop(me, None)
            rss = sum(s[3] for s in t.values())
            if rss > peak["rss"]:
                peak["rss"] = rss
                peak["procs"] = sorted("%s:%dMiB" % (names.get((pid, s[1]), s[1]),
                                                     s[3] // 1048576)
                                       for pid, s in t.items())
            for pid, s in t.items():
                # a fork keeps its parent's name until it execs: name by (pid, comm)
                if (pid, s[1]) not in names:
                    names[(pid, s[1])] = label(pid, s[1])
                cpu_by_pid[pid] = (names[(pid, s[1])], s[2])
            stop.wait(INTERVAL)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    wall = time.time() - began
    # reap the orphans that came to us, so their CPU counts
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    stop.set()
    th.join(5)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_name = {}
    for name, cpu in cpu_by_pid.values():
        by_name[name] = round(by_name.get(name, 0) + cpu, 2)
    result = {"rc": rc, "wall": round(wall, 3), "cpu": round(ru.ru_utime + ru.ru_stime, 3),
              "user": round(ru.ru_utime, 3), "sys": round(ru.ru_stime, 3),
              "max_rss_one": ru.ru_maxrss * 1024, "peak_rss_sum": peak["rss"],
              "peak_procs": peak["procs"], "cpu_by_name": by_name}
    with open(out_path, "w") as f:
        json.dump(result, f)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
