"""The receiver container's entry point (``Dockerfile`` ENTRYPOINT).

    serve ARGS...   run ``go2aliyun-receiver serve ARGS`` (as our child: the engine's
                    SIGTERM to PID 1 is passed on), after three container-only chores:
                    * ``--disk NAME=FILE`` where FILE is a regular file (an image file in
                      a volume): attach it to a loop device, made inside the container
                      (``/dev`` of a container has no loop nodes: ``mknod`` of the one
                      the kernel hands out), reusing the loop device that already holds
                      FILE after a restart;
                    * no ``--console``/``--no-console``: the token goes to stdout
                      (``docker logs``);
                    * after a restart in the middle of a migration (READY_FOR_DATA,
                      SYNCING, CONVERTING), the target disks are mounted again: the
                      mounts of PREPARING lived in the old container's mount namespace.
    healthcheck     exit 0 when ``https://127.0.0.1:<control port>/healthz`` answers 200
                    (self-signed: the certificate is not checked, only the answer).
"""

import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import urllib.request

from receiver import blockdev
from receiver.state import read_json
from wire import runner
from wire.errors import Go2AliyunError

log = logging.getLogger("go2aliyun.container")

RECEIVER = "go2aliyun-receiver"
DEFAULT_STATE = "/var/lib/go2aliyun"
# States whose step needs the target disks mounted where PREPARING mounted them.
MOUNTED_STATES = ("READY_FOR_DATA", "SYNCING", "CONVERTING")


# --- pure --------------------------------------------------------------------------

def split_serve_args(args):
    """(disks [(index, name, value)], state_dir, has_console) from serve's arguments
    (pure). Both ``--disk X`` and ``--disk=X`` are understood; ``index`` is where the
    ``NAME=VALUE`` argument is."""
    disks, state, console = [], DEFAULT_STATE, False
    i = 0
    while i < len(args):
        opt, eq, val = args[i].partition("=")
        idx = i
        if opt in ("--disk", "--state") and not eq:
            if i + 1 >= len(args):
                break
            idx = i + 1
            val = args[idx]
        if opt == "--disk":
            name, sep, value = val.partition("=")
            if sep:
                disks.append((idx, name, value))
        elif opt == "--state":
            state = val
        elif opt in ("--console", "--no-console"):
            console = True
        i = idx + 1
    return disks, state, console


def replace_disk_values(args, disks, devices):
    """serve's arguments with each ``--disk NAME=FILE`` turned into ``NAME=DEVICE``
    (pure); ``devices`` maps NAME -> device for the ones to replace."""
    out = list(args)
    for idx, name, _value in disks:
        if name in devices:
            prefix = "--disk=" if out[idx].startswith("--disk=") else ""
            out[idx] = "%s%s=%s" % (prefix, name, devices[name])
    return out


def needs_remount(doc):
    """Whether the migration document is in a state whose step works on the mounted
    target disks (pure)."""
    state = doc.get("state")
    if state in MOUNTED_STATES:
        return True
    return state == "FAILED" and doc.get("step") in ("CONVERTING",)


def remount_after_restart(state_dir, disks):
    """PREPARING mounted the target disks in the old container; mount them again, as
    PREPARING left them, before ``serve`` opens the rsync modules on them.

    Plain partitions are mounted here directly, with nodes made from sysfs right before
    each mount: the disks module, given a fresh container without partition nodes,
    takes a partition without a node for a blank one (and would make a new filesystem
    on it). Anything else (LVM) is left to ``serve``'s own restore."""
    doc = read_json(os.path.join(state_dir, "migration.json"))
    prepared = read_json(os.path.join(state_dir, "prepare.json"))
    if not doc or not prepared or not needs_remount(doc):
        return None
    plan = blockdev.plan_remount(prepared, disks)
    if plan is None:
        log.info("target disks with volume groups: serve mounts them again")
        return None
    log.info("migration %s is %s: mounting the prepared target disks again", doc["id"],
             doc["state"])
    for dev in sorted(set(disks.values())):
        # open the whole disk once: a partition rescan the kernel owes it happens now
        with contextlib.suppress(OSError):
            os.close(os.open(dev, os.O_RDONLY))
    mounted = blockdev.mounted_paths()
    for node, kernel_name, path, fstype in plan:
        if os.path.realpath(path) in mounted:
            continue
        blockdev.mount_fresh(node, kernel_name, path, fstype)
        log.info("mounted %s at %s", node, path)
    return plan


def proc_masks(mountinfo_text):
    """The mounts Docker lays over parts of ``/proc`` (``/proc/kcore``, ``/proc/sys``
    read-only, ...), deepest first (pure)."""
    points = [line.split()[4] for line in mountinfo_text.splitlines() if line.strip()]
    return sorted((p for p in points if p.startswith("/proc/")), key=len, reverse=True)


def unmask_proc():
    """Lift Docker's masks of ``/proc`` in this container's own mount namespace: while
    any is there the kernel refuses a new proc mount, which the conversion's sandbox
    (bubblewrap, its own PID namespace) makes ("Can't mount proc"). What
    ``--security-opt systempaths=unconfined`` does, which docker-compose cannot pass."""
    with open("/proc/self/mountinfo") as f:
        masks = proc_masks(f.read())
    for mp in masks:
        runner.run(["umount", mp], ok_codes=None)
    return masks


def serve(args):
    disks, state, has_console = split_serve_args(args)
    devices = {}
    for _idx, name, value in disks:
        if os.path.isfile(value):
            devices[name] = blockdev.ensure_attached(os.path.abspath(value))
    argv = replace_disk_values(args, disks, devices)
    if not has_console:
        argv += ["--console", "/dev/stdout"]
    all_disks = {name: devices.get(name, value) for _i, name, value in disks}
    if all_disks:
        remount_after_restart(os.path.abspath(state), all_disks)
    log.info("lifted Docker's masks of /proc: %s", " ".join(unmask_proc()) or "none")
    log.info("starting %s serve", RECEIVER)
    exe = runner.which(RECEIVER) or os.path.join(os.path.dirname(sys.executable), RECEIVER)
    sys.stdout.flush()
    return supervise([exe, "serve"] + argv)


def supervise(argv):
    """Run ``argv`` as our child and hand it the engine's SIGTERM/SIGINT (we are PID 1);
    returns its exit code."""
    child = runner.start(argv)

    def forward(signum, frame):
        with contextlib.suppress(OSError):
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    return rc if rc >= 0 else 128 - rc


def healthcheck(state_dir=DEFAULT_STATE, timeout=5):
    port = 8080
    try:
        with open(os.path.join(state_dir, "config.json")) as f:
            port = int(json.load(f).get("control_port") or port)
    except (OSError, ValueError):
        pass
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # self-signed; the source pins it, this only probes
    url = "https://127.0.0.1:%d/healthz" % port
    with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:  # noqa: S310
        body = json.loads(r.read().decode())
    return r.status == 200 and body.get("status") == "ok"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s go2aliyun-container: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "serve":
            return serve(rest)
        if command == "healthcheck":
            return 0 if healthcheck(rest[0] if rest else DEFAULT_STATE) else 1
        print("go2aliyun-container: unknown command %r (serve, healthcheck); for anything "
              "else use docker run --entrypoint" % command, file=sys.stderr)
        return 2
    except Go2AliyunError as e:
        print("go2aliyun-container: error [%s]: %s" % (e.code, e), file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print("go2aliyun-container: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
