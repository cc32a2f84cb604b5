"""The push benchmark: ``python3 -m bench.run [--quick] [--out results.json] [--only NAME]``.

Runs every scenario of docs/performance.md between the ``src`` and ``ecs`` network
namespaces through the real receiver and the real TLS data channel, with the baselines
(``tar | nc`` over the same veth, a plain rsync daemon without TLS) measured in the same
invocation; each figure is the median of ``runs`` runs, the page cache dropped before
each cold run. Prints a table and writes JSON. Needs root. ``--quick`` shrinks every
scenario (about 3 minutes); the full run takes about 30-40 minutes, most of it the
million-file footprint, and generates its data sets once into
``/var/cache/go2aliyun/bench`` (``GO2ALIYUN_BENCH_CACHE``).

Figures are not assertions: this is a 2-core VM on a virtual disk shared with other
work, so compare ratios measured side by side, not absolute rates across runs.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time

from bench import datasets, harness, measure, phases
from image_build.dev.netns import netns_pair
from source_script import push
from wire import runner

MB = 1000 * 1000
MiB = 1024 * 1024
LINK_RATE = 100 * MB // 8  # 100 Mbit/s in B/s
LIMIT_KIB = 10240  # bandwidth_limit for scenario 5: 10 MiB/s
DELAY = 0.02  # s, added to the shaped link (scenario 4) by bench.delay

FULL = {
    "runs": 3,
    "mixed": {"usr_bytes": 1024 * MiB, "random_files": 4, "text_files": 4,
              "big_size": 256 * MiB},
    "small": {"count": 200000},
    "tiny": {"count": 1000000}, "tiny_runs": 1,
    "shaped": {"files": 4, "size": 96 * MiB},
    "limit": {"files": 6, "size": 100 * MiB},
}
QUICK = {
    "runs": 1,
    "mixed": {"usr_bytes": 48 * MiB, "random_files": 2, "text_files": 2,
              "big_size": 16 * MiB},
    "small": {"count": 5000},
    "tiny": {"count": 20000}, "tiny_runs": 1,
    "shaped": {"files": 2, "size": 12 * MiB},
    "limit": {"files": 2, "size": 10 * MiB},
}
SCENARIOS = ("full_push", "small_files", "delta", "shaped_link", "bandwidth_limit",
             "footprint", "receiver_phases")


def median(values):
    return statistics.median(values) if values else None


def _rate(nbytes, seconds):
    return nbytes / seconds if seconds else None


class World(object):
    """A receiver in ``ecs`` and ``go2aliyun migrate`` in ``src`` for one data set."""

    def __init__(self, net, base, root, bandwidth_limit=0, bind=None):
        self.net = net
        self.root = root
        self.target = os.path.join(base, "target")
        self.plain_target = os.path.join(base, "plain-target")
        self.mounts = []
        for d in (self.target, self.plain_target):
            os.makedirs(d)
            # in RAM: the receiver's disk is a cloud disk, and this VM's disk is shared
            # with other work; mounted before the receiver starts (its own mount ns)
            harness.mount_tmpfs(d)
            self.mounts.append(d)
        try:
            self.receiver = harness.Receiver(net, base, self.target, bind).start()
        except BaseException:
            self.unmount()
            raise
        self.pusher = harness.Pusher(net, base, root, self.receiver, bandwidth_limit)

    def ours(self, cold=True, fresh=True, compress=None):
        if fresh:
            harness.empty_dir(self.target)
        if cold:
            harness.drop_caches()
        before = measure.tree_cpu(self.receiver.proc.pid)
        m = self.pusher.run(compress=compress)
        m["receiver_cpu"] = round(measure.tree_cpu(self.receiver.proc.pid) - before, 2)
        return m

    def tar_nc(self):
        harness.empty_dir(self.plain_target)
        harness.drop_caches()
        seconds, wire = harness.tar_nc(self.net, self.root, self.plain_target)
        return {"seconds": seconds, "wire_bytes": wire}

    def plain(self):
        harness.empty_dir(self.plain_target)
        harness.drop_caches()
        with harness.PlainRsyncd(self.net, os.path.dirname(self.target),
                                 self.plain_target) as d:
            seconds, wire, stats = d.push(self.root)
        return {"seconds": seconds, "wire_bytes": wire}

    def close(self):
        try:
            self.receiver.stop()
        finally:
            self.unmount()

    def unmount(self):
        while self.mounts:
            harness.umount(self.mounts.pop())


def _summary(runs, key):
    return median([r[key] for r in runs if r.get(key) is not None])


def _ours_summary(runs, nbytes, nfiles):
    secs = _summary(runs, "push_seconds")
    return {
        "push_seconds": secs, "command_seconds": _summary(runs, "wall"),
        "rate_MBps": round(_rate(nbytes, secs) / MB, 1) if secs else None,
        "files_per_s": round(nfiles / secs) if secs else None,
        "cpu_seconds": _summary(runs, "cpu"),
        "cores_busy": round(_summary(runs, "cpu") / _summary(runs, "wall"), 2),
        "cpu_s_per_GB": round(_summary(runs, "cpu") / (nbytes / 1e9), 2) if nbytes else None,
        "peak_rss_MiB": round(max(r["peak_rss_sum"] for r in runs) / MiB, 1),
        "receiver_cpu_seconds": _summary(runs, "receiver_cpu"),
        "wire_bytes": _summary(runs, "wire_bytes"),
        "cpu_by_process": runs[-1].get("cpu_by_name"),
        "peak_processes": runs[-1].get("peak_procs"),
        "runs": [{k: r.get(k) for k in ("push_seconds", "wall", "cpu", "peak_rss_sum",
                                         "wire_bytes", "literal_bytes", "receiver_cpu")}
                 for r in runs],
    }


def compare_with_baselines(world, cfg, nbytes, nfiles, log):
    ours, tar, plain = [], [], []
    for i in range(cfg["runs"]):
        tar.append(world.tar_nc())
        log("  run %d: tar|nc %.1f s" % (i + 1, tar[-1]["seconds"]))
        plain.append(world.plain())
        log("  run %d: plain rsync %.1f s" % (i + 1, plain[-1]["seconds"]))
        ours.append(world.ours())
        log("  run %d: go2aliyun %.1f s (command %.1f s, cpu %.1f s)"
            % (i + 1, ours[-1]["push_seconds"], ours[-1]["wall"], ours[-1]["cpu"]))
    o = _ours_summary(ours, nbytes, nfiles)
    t = median([r["seconds"] for r in tar])
    p = median([r["seconds"] for r in plain])
    return {
        "bytes": nbytes, "files": nfiles, "ours": o,
        "tar_nc": {"seconds": round(t, 2), "rate_MBps": round(_rate(nbytes, t) / MB, 1),
                   "files_per_s": round(nfiles / t),
                   "runs": [round(r["seconds"], 2) for r in tar]},
        "plain_rsync": {"seconds": round(p, 2), "rate_MBps": round(_rate(nbytes, p) / MB, 1),
                        "files_per_s": round(nfiles / p),
                        "runs": [round(r["seconds"], 2) for r in plain]},
        "vs_tar_nc": round(t / o["push_seconds"], 3),
        "tls_cost": round(o["push_seconds"] / p - 1, 3),
    }


# ------------------------------------------------------------------ scenarios

def scenario_full_push(net, base, cfg, log, state):
    root = datasets.ensure("mixed", **cfg["mixed"])
    nbytes, nfiles = datasets.size_of(root)
    world = World(net, base, root)
    try:
        res = compare_with_baselines(world, cfg, nbytes, nfiles, log)
        # scenario 3 goes on from the full copy the last run left
        state["delta"] = delta_runs(world, cfg, log)
    finally:
        world.close()
    res["targets"] = {"vs_tar_nc >= 0.9": res["vs_tar_nc"] >= 0.9,
                      "tls_cost <= 0.10": res["tls_cost"] <= 0.10}
    state["full_push_seconds"] = res["ours"]["push_seconds"]
    state["full_tar_nc_seconds"] = res["tar_nc"]["seconds"]
    state["full_wire_bytes"] = res["ours"]["wire_bytes"]
    return res


def delta_runs(world, cfg, log):
    """Each run changes another 1% of the files (the changes pile up, so each pass has
    exactly the new 1% to send); one more pass with nothing changed shows the fixed
    cost (scan, connect). The source set is restored at the end."""
    runs = []
    undo = []
    try:
        m = world.ours(fresh=False)
        m["changed_files"] = 0
        log("  delta, nothing changed: %.1f s" % m["push_seconds"])
        runs.append(m)
        for i in range(cfg["runs"]):
            changed = datasets.change_some(world.root, 0.01, seed=4 + i)
            undo.append(changed)
            m = world.ours(fresh=False)
            m["changed_files"] = len(changed)
            runs.append(m)
            log("  delta run %d: %d files changed, %.1f s, %d bytes on the wire"
                % (i + 1, len(changed), m["push_seconds"], m["wire_bytes"]))
    finally:
        for changed in reversed(undo):
            datasets.undo_changes(changed)
    return runs


def scenario_delta(net, base, cfg, log, state):
    runs = state.get("delta")
    if not runs:
        raise RuntimeError("the delta pass runs after the full push (scenario full_push)")
    idle, runs = runs[0], runs[1:]
    secs = median([r["push_seconds"] for r in runs])
    wire = median([r["wire_bytes"] for r in runs])
    full = state["full_push_seconds"]
    res = {"changed_files": runs[0]["changed_files"], "push_seconds": secs,
           "wire_bytes": wire, "transferred_files": median([r["transferred_files"]
                                                             for r in runs]),
           "full_push_seconds": full, "full_wire_bytes": state["full_wire_bytes"],
           "time_vs_full": round(secs / full, 3),
           "bytes_vs_full": round(wire / float(state["full_wire_bytes"]), 4),
           "runs": [r["push_seconds"] for r in runs],
           "nothing_changed_seconds": idle["push_seconds"],
           "full_tar_nc_seconds": state.get("full_tar_nc_seconds")}
    res["targets"] = {"time_vs_full <= 0.10": res["time_vs_full"] <= 0.10}
    return res


def scenario_small_files(net, base, cfg, log, state):
    root = datasets.ensure("small", **cfg["small"])
    nbytes, nfiles = datasets.size_of(root)
    world = World(net, base, root)
    try:
        res = compare_with_baselines(world, cfg, nbytes, nfiles, log)
    finally:
        world.close()
    res["targets"] = {"vs_tar_nc >= 0.9": res["vs_tar_nc"] >= 0.9,
                      "tls_cost <= 0.10": res["tls_cost"] <= 0.10}
    state["small"] = res
    return res


def scenario_shaped_link(net, base, cfg, log, state):
    # the issue asks for 20 ms of delay too; this kernel has no netem (only tbf and
    # htb): the "delay" runs go through bench.delay, a userspace relay in ecs in front of
    # the receiver that holds what the source sends DELAY seconds (see its docstring and
    # docs/performance.md)
    out = {"link": "%d Mbit/s token bucket (tbf) on the src veth; 'delay' runs: + %d ms "
           "from the source to the receiver (userspace relay in ecs)"
           % (LINK_RATE * 8 // MB, DELAY * 1000),
           "link_Bps": LINK_RATE, "delay_seconds": DELAY}
    for kind in ("random", "text"):
        root = datasets.ensure(kind, **cfg["shaped"])
        nbytes, _files = datasets.size_of(root)
        res = {"bytes": nbytes}
        for mode in ("off", "auto", "auto_delay"):
            # "auto_delay": a receiver of its own on 127.0.0.1 in ecs, behind the delay
            # relay on its address; one receiver at a time (the same ports)
            delayed = mode == "auto_delay"
            sub = os.path.join(base, "%s-%s" % (kind, "delay" if delayed else "plain"))
            if mode != "auto":
                os.makedirs(sub)
                world = World(net, sub, root, bind="127.0.0.1" if delayed else None)
            try:
                net.shape(rate="100mbit")
                if kind == "random" and mode == "off":
                    t = world.tar_nc()["seconds"]  # one run: the link's capacity
                    res["tar_nc_of_link"] = round(nbytes / t / LINK_RATE, 3)
                    # what TCP payload the shaped link carries (tbf counts headers too)
                    out["capacity_Bps"] = nbytes / t
                if delayed:
                    with harness.DelayRelay(net, DELAY):
                        runs = [world.ours(cold=False, compress="auto")
                                for _ in range(cfg["runs"])]
                else:
                    runs = [world.ours(cold=False, compress=mode)
                            for _ in range(cfg["runs"])]
            except BaseException:
                world.close()
                raise
            finally:
                net.unshape()
            if mode != "off":
                world.close()
            secs = median([r["push_seconds"] for r in runs])
            res[mode] = {"push_seconds": secs,
                         "rate_MBps": round(nbytes / secs / MB, 2),
                         "of_link": round(nbytes / secs / LINK_RATE, 3),
                         "of_tar_nc": round(nbytes / secs / out["capacity_Bps"], 3),
                         "switched": sum(1 for r in runs if r["wire_bytes"] < 0.8 * nbytes),
                         "wire_bytes": median([r["wire_bytes"] for r in runs]),
                         "cpu_seconds": median([r["cpu"] for r in runs]),
                         "runs": [r["push_seconds"] for r in runs]}
            log("  %s, compression %s: %.2fx the link" % (kind, mode, res[mode]["of_link"]))
        out[kind] = res
    out["targets"] = {
        "random auto >= 0.95 of link": out["random"]["auto"]["of_link"] >= 0.95,
        "random off >= 0.95 of link": out["random"]["off"]["of_link"] >= 0.95,
        "text auto >= 2x link": out["text"]["auto"]["of_link"] >= 2.0,
        "random auto, delay >= 0.95 of link": out["random"]["auto_delay"]["of_link"] >= 0.95,
        "text auto, delay >= 2x link": out["text"]["auto_delay"]["of_link"] >= 2.0,
    }
    return out


def scenario_bandwidth_limit(net, base, cfg, log, state):
    root = datasets.ensure("random", **cfg["limit"])
    nbytes, _files = datasets.size_of(root)
    world = World(net, base, root, bandwidth_limit=LIMIT_KIB)
    try:
        runs = [world.ours() for _ in range(cfg["runs"])]
    finally:
        world.close()
    rates = [r["literal_bytes"] / 1024.0 / r["push_seconds"] for r in runs]
    wire_rates = [r["wire_bytes"] / 1024.0 / r["push_seconds"] for r in runs]
    rate = median(rates)
    res = {"limit_KiBps": LIMIT_KIB, "bytes": nbytes, "push_seconds":
           median([r["push_seconds"] for r in runs]), "rate_KiBps": round(rate),
           "wire_rate_KiBps": round(median(wire_rates)),
           "deviation": round(rate / LIMIT_KIB - 1, 3), "runs_KiBps": [round(r) for r in rates]}
    res["targets"] = {"within 5%": abs(res["deviation"]) <= 0.05}
    return res


def scenario_footprint(net, base, cfg, log, state):
    out = {}
    small = state.get("small")
    if small:
        o = small["ours"]
        out["200k"] = {"files": small["files"], "bytes": small["bytes"],
                       "cpu_seconds": o["cpu_seconds"], "cores_busy": o["cores_busy"],
                       "cpu_s_per_GB": o["cpu_s_per_GB"], "peak_rss_MiB": o["peak_rss_MiB"],
                       "cpu_by_process": o["cpu_by_process"]}
    root = datasets.ensure("tiny", **cfg["tiny"])
    nbytes, nfiles = datasets.size_of(root)
    world = World(net, base, root)
    try:
        runs = [world.ours() for _ in range(cfg["tiny_runs"])]
    finally:
        world.close()
    o = _ours_summary(runs, nbytes, nfiles)
    out["1M"] = {"files": nfiles, "bytes": nbytes, "push_seconds": o["push_seconds"],
                 "files_per_s": o["files_per_s"], "cpu_seconds": o["cpu_seconds"],
                 "cores_busy": o["cores_busy"], "cpu_s_per_GB": o["cpu_s_per_GB"],
                 "peak_rss_MiB": o["peak_rss_MiB"], "cpu_by_process": o["cpu_by_process"],
                 "peak_processes": o["peak_processes"]}
    out["targets"] = {"cores_busy <= 1": all(v["cores_busy"] <= 1.0 for k, v in out.items()
                                              if k != "targets"),
                      "peak_rss <= 200 MB at 1M": out["1M"]["peak_rss_MiB"] * MiB <= 200 * MB}
    return out


def scenario_receiver_phases(net, base, cfg, log, state):
    return phases.measure(base, log)


RUNNERS = {"full_push": scenario_full_push, "small_files": scenario_small_files,
           "delta": scenario_delta, "shaped_link": scenario_shaped_link,
           "bandwidth_limit": scenario_bandwidth_limit, "footprint": scenario_footprint,
           "receiver_phases": scenario_receiver_phases}


# ------------------------------------------------------------------ reporting

def machine():
    info = {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}
    with open("/proc/meminfo") as f:
        info["mem_GiB"] = round(int(f.readline().split()[1]) / 1024.0 / 1024, 1)
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["rsync"] = runner.run(["rsync", "--version"]).stdout.splitlines()[0]
    info["load_before"] = os.getloadavg()
    return info


def rows(results):
    """(scenario, figure, value, target, met) lines for the table."""
    out = []
    s = results["scenarios"]

    def add(name, figure, value, target="", met=None):
        out.append((name, figure, value, target,
                    "" if met is None else ("yes" if met else "NO")))

    for name in ("full_push", "small_files"):
        r = s.get(name)
        if not r or "error" in r:
            continue
        unit = "MB/s" if name == "full_push" else "files/s"
        key = "rate_MBps" if name == "full_push" else "files_per_s"
        add(name, "go2aliyun %s" % unit, r["ours"][key])
        add(name, "tar | nc %s" % unit, r["tar_nc"][key])
        add(name, "plain rsync %s" % unit, r["plain_rsync"][key])
        add(name, "vs tar | nc", r["vs_tar_nc"], ">= 0.9", r["vs_tar_nc"] >= 0.9)
        add(name, "TLS cost vs plain rsync", "%+.1f%%" % (100 * r["tls_cost"]), "<= 10%",
            r["tls_cost"] <= 0.10)
        add(name, "source cores busy", r["ours"]["cores_busy"], "<= 1",
            r["ours"]["cores_busy"] <= 1)
    r = s.get("delta")
    if r and "error" not in r:
        add("delta", "time vs full push", r["time_vs_full"], "<= 0.10",
            r["time_vs_full"] <= 0.10)
        add("delta", "wire bytes vs full", r["bytes_vs_full"])
        if r.get("nothing_changed_seconds") is not None:
            add("delta", "seconds, nothing changed / 1% changed",
                "%s / %s" % (r["nothing_changed_seconds"], r["push_seconds"]))
    r = s.get("shaped_link")
    if r and "error" not in r:
        for kind in ("random", "text"):
            for mode in ("off", "auto", "auto_delay"):
                if mode not in r[kind]:
                    continue
                target = (">= 0.95" if kind == "random" else
                          (">= 2.0" if mode != "off" else ""))
                met = (r[kind][mode]["of_link"] >= 0.95 if kind == "random" else
                       (r[kind][mode]["of_link"] >= 2.0 if mode != "off" else None))
                label = ("auto, +%d ms" % (1000 * r.get("delay_seconds", DELAY))
                         if mode == "auto_delay" else mode)
                add("shaped_link", "%s, compression %s (x link)" % (kind, label),
                    r[kind][mode]["of_link"], target, met)
        add("shaped_link", "tar | nc (x link)", r["random"].get("tar_nc_of_link"))
        for mode in ("off", "auto"):
            if "of_tar_nc" in r["random"][mode]:
                add("shaped_link", "random, compression %s (x tar | nc)" % mode,
                    r["random"][mode]["of_tar_nc"])
    r = s.get("bandwidth_limit")
    if r and "error" not in r:
        add("bandwidth_limit", "KiB/s at %d" % r["limit_KiBps"], r["rate_KiBps"], "±5%",
            abs(r["deviation"]) <= 0.05)
    r = s.get("footprint")
    if r and "error" not in r:
        for k in ("200k", "1M"):
            if k in r:
                add("footprint", "%s files: cores busy" % k, r[k]["cores_busy"], "<= 1",
                    r[k]["cores_busy"] <= 1)
                add("footprint", "%s files: CPU s/GB" % k, r[k]["cpu_s_per_GB"])
                add("footprint", "%s files: peak RSS MiB" % k, r[k]["peak_rss_MiB"],
                    "<= 200 MB" if k == "1M" else "",
                    r[k]["peak_rss_MiB"] * MiB <= 200 * MB if k == "1M" else None)
    r = s.get("receiver_phases")
    if r and "error" not in r:
        for phase in ("PREPARING", "CONVERTING", "VERIFYING"):
            add("receiver_phases", "%s seconds" % phase, r.get(phase))
    for name, r in s.items():
        if "error" in r:
            add(name, "FAILED", r["error"][:60])
        if "skipped" in r:
            add(name, "skipped", r["skipped"][:60])
    return out


def table(results):
    lines = rows(results)
    widths = [max(len(str(x[i])) for x in lines + [("scenario", "figure", "value",
                                                     "target", "met")]) for i in range(5)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    text = [fmt % ("scenario", "figure", "value", "target", "met"),
            fmt % tuple("-" * w for w in widths)]
    text += [fmt % tuple(str(x) for x in line) for line in lines]
    return "\n".join(text)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m bench.run", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shrink every scenario (~3 min)")
    ap.add_argument("--out", default="bench-results.json", help="JSON results file")
    ap.add_argument("--only", action="append", choices=SCENARIOS,
                    help="run only this scenario (repeatable; delta needs full_push)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    args = ap.parse_args(argv)
    # SIGTERM ends us through the finally blocks (namespaces, mounts, processes)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        sys.stderr.write("bench.run needs root (network namespaces, drop_caches)\n")
        return 2
    cfg = dict(QUICK if args.quick else FULL)
    if args.runs:
        cfg["runs"] = args.runs
    chosen = [s for s in SCENARIOS if not args.only or s in args.only]
    results = {"quick": args.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime()),
               "machine": machine(), "config": cfg, "scenarios": {}}
    state = {}

    def log(text):
        sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), text))
        sys.stderr.flush()

    for name in chosen:
        if name == "receiver_phases" and args.quick and not args.only:
            results["scenarios"][name] = {
                "skipped": "--quick: the cutover boots the sample server under qemu (about "
                           "3 minutes); run without --quick or with --only receiver_phases"}
            continue
        log("scenario %s" % name)
        began = time.time()
        try:
            with netns_pair() as net, harness.tempdir("g2a-bench-") as base:
                results["scenarios"][name] = RUNNERS[name](net, base, cfg, log, state)
        except Exception as e:  # noqa: BLE001 - one failed scenario must not hide the rest
            log("scenario %s failed: %s" % (name, e))
            results["scenarios"][name] = {"error": "%s: %s" % (type(e).__name__, e)}
        results["scenarios"][name]["scenario_seconds"] = round(time.time() - began, 1)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    print(table(results))
    print("results: %s" % os.path.abspath(args.out))
    return 1 if any("error" in r for r in results["scenarios"].values()) else 0


if __name__ == "__main__":
    push.COMPRESS_ENV  # noqa: B018 - fail early when push lacks the compression knob
    sys.exit(main())
