"""``go2aliyun-receiver``: serve, token new, status.

``serve`` prepares the state folder (TLS key and certificate, the migration, a first
one-time token), then starts and supervises three processes, all through
``wire.runner.start``:

* gunicorn with TLS on the control port (``receiver.app:serve_app``), client
  certificates optional at the TLS level and required by the app on ``/v1``;
* the data channel relay (``_datachannel``, TLS on the data port, client certificate
  required), which starts an rsync daemon per connection over a socket pair (no rsync
  daemon listens anywhere);
* the worker (``_worker``) that runs the long steps.

A child that dies is restarted (at most ``MAX_RESTARTS`` starts a minute, or as many
quick failures in a row, then serve gives up: with ``receiver.port_in_use`` naming the
port when another process took the child's port meanwhile, else
``receiver.child_failed``). SIGTERM or SIGINT stops them all. Children get SIGTERM when
serve itself dies (``PR_SET_PDEATHSIG``), so a killed serve leaves no listener behind.

The token goes to the status file (0600) and to /dev/console only: never to a log,
never into any argv.
"""

import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import click
from gunicorn.config import KNOWN_SETTINGS

from receiver import clouddisks, cloudimage, datachannel, steps, tls, tokens, worker
from receiver import state as st
from receiver.disks import apply as disks_apply
from receiver.disks import targets
from wire import CONTROL_PORT, DATA_PORT, logs, runner
from wire.climain import run_click
from wire.errors import ConfigError, Go2AliyunError, UsageError

log = logging.getLogger("receiver.cli")

DEFAULT_STATE = "/var/lib/go2aliyun"
MODULE_RE = re.compile(r"^(system|disk([1-9]|1[0-6]))$")
MAX_RESTARTS = 5  # starts of one child in a minute, or quick failures in a row
QUICK_FAILURE = 30  # s: a child that dies sooner after its start failed quickly
STATUS_FILE = "status.json"


# --- pure helpers ----------------------------------------------------------------


def parse_target_roots(values):
    """``["system=/a", "disk1=/b"]`` -> ``{"system": "/a", "disk1": "/b"}`` (absolute)."""
    roots = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep or not path:
            raise UsageError("--target-root %r must be NAME=DIR" % v,
                             hint="e.g. --target-root system=/srv/target")
        if not MODULE_RE.match(name):
            raise UsageError("--target-root name %r is not system or disk1..disk16" % name)
        if name in roots:
            raise UsageError("--target-root %s is given twice" % name)
        roots[name] = os.path.abspath(path)
    return roots


def parse_duration(text):
    """``3600``, ``90m``, ``24h``, ``7d`` -> seconds."""
    m = re.match(r"^\s*(\d+)\s*([smhd]?)\s*$", str(text))
    if not m or int(m.group(1)) <= 0:
        raise UsageError("--token-ttl %r is not a duration" % text, hint="e.g. 3600, 90m, 24h")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def guess_address(bind):
    if bind not in ("0.0.0.0", "::", ""):  # noqa: S104 - the receiver serves the source over the network
        return bind
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def check_ports_free(bind, ports):
    """Refuse to start when a port of ``ports`` ({name: port}) cannot be bound on ``bind``:
    else serve would print the ports as if it were up while a child fails to bind and is
    restarted forever. Bound with SO_REUSEADDR, as gunicorn and the relay do."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for name, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((bind, port))
            except OSError as e:
                in_use = e.errno == errno.EADDRINUSE
                raise ConfigError(
                    "the %s port %s is %s" % (name, host_port(bind, port), "already in use"
                                              if in_use else "not available: %s" % e.strerror),
                    code="receiver.port_in_use" if in_use else "receiver.port_unavailable",
                    hint="stop what listens there (ss -ltnp 'sport = :%d') or choose another "
                         "--%s-port" % (port, name)) from e


def host_port(bind, port):
    return "[%s]:%d" % (bind, port) if ":" in bind else "%s:%d" % (bind, port)


def render_status(status):
    """The lines shown on the console and by ``token new`` (pure)."""
    lines = ["go2aliyun receiver for migration %s" % status.get("migration_id")]
    if status.get("token"):
        lines.append("token: %s" % status["token"])
    lines += [
        "address: %s" % status.get("address"),
        "fingerprint: %s" % status.get("fingerprint"),
        "ports: control %s, data %s" % (status.get("control_port"), status.get("data_port")),
    ]
    if status.get("blank_disks") is not None:
        lines.append("blank target disks: %s" % (", ".join(
            "%s (%.1f GiB)" % (d["path"], d["size"] / float(1 << 30))
            for d in status["blank_disks"]) or "none yet: attach empty disks"))
    return "\n".join(lines) + "\n"


PLATFORM_FILE = "/sys/class/dmi/id/product_name"
# What the machine's firmware calls it -> the settings a launch's cloud.json would carry.
# The local provider's qemu names its instances so (image_build/cloud/local.py): their
# disks go back to the host, which verifies the boot and makes the image.
PLATFORMS = {"go2aliyun local instance": {"provider": "local", "verify_boot": "provider"}}


def platform_settings(product_name):
    """Settings for a receiver launched by hand, from the DMI product name (pure)."""
    return dict(PLATFORMS.get((product_name or "").strip(), {}))


def read_platform(path=PLATFORM_FILE):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


# --- effects ---------------------------------------------------------------------


def write_status(store, **fields):
    status = store.read(STATUS_FILE, {}) or {}
    status.update(fields)
    store.write(STATUS_FILE, status, mode=0o600)
    return status


def to_console(path, text):
    """Best effort: the serial console is what the ECS console shows."""
    if not path:
        return
    try:
        # non-blocking: a console stopped by flow control must not hang serve
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_APPEND | os.O_NONBLOCK)
    except OSError as e:
        log.info("console %s not writable: %s", path, e.strerror)
        return
    try:
        os.write(fd, text.encode("utf-8"))
    except OSError as e:
        log.info("console %s not writable: %s", path, e.strerror)
    finally:
        os.close(fd)


def lock_serve(state_dir):
    """Only one ``serve`` per state folder: hold ``serve.lock`` (with our pid in it)."""
    fd = os.open(os.path.join(state_dir, "serve.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        other = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise ConfigError(
            "another go2aliyun-receiver serve (pid %s) uses %s" % (other or "?", state_dir),
            hint="stop it first, or give another --state",
        ) from e
    os.ftruncate(fd, 0)
    os.write(fd, b"%d\n" % os.getpid())
    return fd


def issue_token(store, ttl):
    token = tokens.new_token(store, ttl=ttl)
    return token, time.time() + ttl


def _pdeathsig():
    """In the child before exec: get SIGTERM when serve dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setpgid(0, 0)


class Child(object):
    """A supervised child; ``port``: (name, bind, port) it listens on, if any."""

    def __init__(self, name, argv, port=None):
        self.name = name
        self.argv = argv
        self.port = port
        self.proc = None
        self.starts = []
        self.quick_failures = 0

    def start(self, logdir):
        out = open(os.path.join(logdir, "%s.out" % self.name), "ab")  # noqa: SIM115
        try:
            self.proc = runner.start(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out, preexec_fn=_pdeathsig)
        finally:
            out.close()
        self.starts.append(time.time())
        self.starts = [t for t in self.starts if t > time.time() - 60]
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def stop(self, timeout=10):
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                p.kill()
            p.wait(5)


def child_argvs(state_dir, bind, control_port, data_port, workers=2):
    """Pure: the three processes serve runs."""
    py = sys.executable
    kp, cp = tls.key_path(state_dir), tls.cert_path(state_dir)
    logdir = os.path.join(state_dir, "logs")
    return [
        ("datachannel", [py, "-m", "receiver.cli", "_datachannel", "--state", state_dir,
                         "--bind", bind, "--port", str(data_port)]),
        ("worker", [py, "-m", "receiver.cli", "_worker", "--state", state_dir]),
        ("api", [py, "-m", "gunicorn",
                 "--bind", host_port(bind, control_port),
                 "--certfile", cp, "--keyfile", kp, "--ca-certs", cp,
                 "--cert-reqs", "1",  # ssl.CERT_OPTIONAL: the app demands it on /v1
                 "--workers", str(workers), "--threads", "4",
                 # gthread with TLS handshakes in the event loop, bounded (slowloris)
                 "--worker-class", "receiver.apiworker.ThreadWorker",
                 "--timeout", "120", "--graceful-timeout", "5",
                 "--error-logfile", os.path.join(logdir, "gunicorn.log"),
                 "--access-logfile", os.path.join(logdir, "access.log"),
                 "--limit-request-line", "4094", "--limit-request-fields", "50"]
         + gunicorn_extra_args() + ["receiver.app:serve_app(%r)" % state_dir]),
    ]


def gunicorn_extra_args():
    """Newer gunicorn opens a control socket at one fixed path per user
    ($HOME/.gunicorn/gunicorn.ctl): several receivers on one host (tests, namespaces)
    would fight over it, and we do not use it."""
    names = {s.name for s in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def supervise(children, logdir, stop_flag, poll=0.3):
    for c in children:
        c.start(logdir)
    try:
        while not stop_flag["now"]:
            time.sleep(poll)
            for c in children:
                rc = c.proc.poll()
                if rc is None or stop_flag["now"]:
                    continue
                log.error("%s exited with %s", c.name, rc)
                quick = time.time() - c.starts[-1] < QUICK_FAILURE
                c.quick_failures = c.quick_failures + 1 if quick else 0
                if len(c.starts) >= MAX_RESTARTS or c.quick_failures >= MAX_RESTARTS:
                    if c.port:  # another process took its port: say so, name the port
                        name, bind, port = c.port
                        check_ports_free(bind, {name: port})
                    raise Go2AliyunError(
                        "%s keeps dying (%d starts in the last minute, %d quick failures "
                        "in a row); see %s" % (c.name, len(c.starts), c.quick_failures,
                                               os.path.join(logdir, c.name + ".out")),
                        code="receiver.child_failed")
                c.start(logdir)
    finally:
        for c in reversed(children):
            c.stop()


def prepare_state(state_dir, bind, address, control_port, data_port, target_roots, ttl,
                  console, extra=None, blank=None):
    """First-start work: folder, key/cert, migration, config, first token, status."""
    store = st.Store(state_dir)
    doc = store.ensure()
    os.makedirs(os.path.join(store.dir, "logs"), mode=0o700, exist_ok=True)
    _, cp, _ = tls.ensure_ca(store.dir, addresses=[address])
    with open(cp, "rb") as f:
        fp = tls.fingerprint(f.read())
    store.write("config.json", {
        "bind": bind, "address": address, "control_port": control_port,
        "data_port": data_port, "target_roots": target_roots,
        **(extra or {}),
    })
    fields = {"migration_id": doc["id"], "address": address, "fingerprint": fp,
              "control_port": control_port, "data_port": data_port,
              "blank_disks": None if blank is None else [
                  {"path": d["path"], "size": d["size"]} for d in blank[0]]}
    if not tokens.has_tokens(store):
        token, expires = issue_token(store, ttl)
        fields.update(token=token, token_expires_at=int(expires))
    status = write_status(store, **fields)
    logs.register_secret(status.get("token"))
    to_console(console, render_status(status))
    return store, status


# --- click -----------------------------------------------------------------------

CLOUD_CONFIG = cloudimage.CLOUD_CONFIG


def read_cloud_config(path=CLOUD_CONFIG):
    """cloud.json (written by launch through user-data), or {} when not launched so."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError("cannot read %s: %s" % (path, e),
                         hint="relaunch the instance, or pass --disk and --provider") from e


state_option = click.option("--state", "state_dir", default=DEFAULT_STATE, show_default=True,
                            type=click.Path(file_okay=False), help="the state folder")


@click.group()
def cli():
    """The receiver of a go2aliyun migration (runs on the intermediate instance)."""


@cli.command()
@state_option
@click.option("--bind", default="0.0.0.0", show_default=True, help="address to listen on")  # noqa: S104 - the receiver serves the source over the network
@click.option("--control-port", default=CONTROL_PORT, show_default=True, type=int)
@click.option("--data-port", default=DATA_PORT, show_default=True, type=int)
@click.option("--target-root", "target_roots", multiple=True, metavar="NAME=DIR",
              help="a folder that receives disk NAME (system, disk1..disk16)")
@click.option("--disk", "disks", multiple=True, metavar="NAME=/dev/X",
              help="a block device that becomes disk NAME (system, disk1..disk16); the "
              "source layout is rebuilt on it in PREPARING")
@click.option("--force-wipe", multiple=True, metavar="NAME",
              help="allow PREPARING to wipe disk NAME although it holds data (a module "
              "name of --disk, or with --blank-disks a device such as /dev/vdc)")
@click.option("--blank-disks", is_flag=True,
              help="when neither cloud.json, --disk nor --target-root names the targets "
              "(launched by hand from the console): take this machine's blank disks, "
              "matched to the source's disks by size")
@click.option("--no-verify-boot", is_flag=True,
              help="skip the qemu test boot in VERIFYING (for hosts that cannot run qemu)")
@click.option("--provider", type=click.Choice(["local", "aliyun"]), default=None,
              help="who makes the image: aliyun (snapshots + custom image; the default when "
              "launched by go2aliyun-cloud) or local (qcow2 files in --output)")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="local provider: folder for the image set (default STATE/image)")
@click.option("--skip-mount-type", "skip_mount_types", multiple=True, hidden=True,
              help="filesystem types not to mount in PREPARING (a host without vfat)")
@click.option("--address", default=None, help="the address the source should use "
              "(printed with the token); default: guessed from --bind")
@click.option("--token-ttl", default="24h", show_default=True, help="lifetime of a token")
@click.option("--console", default="/dev/console", show_default=True,
              help="where to print token, address and fingerprint")
@click.option("--no-console", is_flag=True, help="do not write to the console (tests)")
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn workers")
@click.option("--cloud-config", "cloud_config_path", default=CLOUD_CONFIG, show_default=True,
              hidden=True, help="cloud.json written by launch through user-data (tests)")
@click.option("--cloud-endpoint", default=None, hidden=True,
              help="aliyun provider: API endpoint HOST:PORT instead of Alibaba Cloud's (tests)")
@click.option("--cloud-protocol", default="https", hidden=True,
              type=click.Choice(["https", "http"]))
@click.option("--metadata-endpoint", default=None, hidden=True,
              help="aliyun provider: reach the metadata service through this HTTP proxy "
                   "(tests)")
@click.option("--cloud-poll-interval", default=5.0, type=float, hidden=True,
              help="aliyun provider: seconds between two status checks (tests)")
@click.option("-v", "--verbose", is_flag=True)
def serve(state_dir, bind, control_port, data_port, target_roots, disks, force_wipe,
          blank_disks, no_verify_boot, provider, output, skip_mount_types, address, token_ttl,
          console, no_console, workers, cloud_config_path, cloud_endpoint, cloud_protocol,
          metadata_endpoint, cloud_poll_interval, verbose):
    """Run the control API, the data channel (rsync behind it) and the worker."""
    state_dir = os.path.abspath(state_dir)
    os.makedirs(os.path.join(state_dir, "logs"), mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)
    logs.setup(logfile=os.path.join(state_dir, "logs", "receiver.log"), verbose=verbose)
    lock_fd = lock_serve(state_dir)  # held until this process ends
    check_ports_free(bind, {"control": control_port, "data": data_port})  # before any output
    roots = parse_target_roots(target_roots)
    disk_map = disks_apply.parse_disk_args(disks)
    if roots and disk_map:
        raise UsageError("give target disks (--disk) or target folders (--target-root), not both")
    cloud_config_path = os.path.abspath(cloud_config_path)
    cloud = read_cloud_config(cloud_config_path)
    settings = cloud or platform_settings(read_platform())
    if provider is None:
        provider = (settings.get("provider") or "aliyun") if settings else "local"
    if cloud and not roots and not disk_map:
        disk_map = clouddisks.resolve(clouddisks.disks_from_cloud_config(cloud))
        log.info("target disks from %s: %s", cloud_config_path, disk_map)
    auto_disks = bool(blank_disks and not roots and not disk_map)
    wipe_modules = [v for v in force_wipe if MODULE_RE.match(v)]
    wipe_devices = [v for v in force_wipe if not MODULE_RE.match(v)]
    if wipe_devices and not auto_disks:
        raise UsageError("--force-wipe %s: a device is named only with --blank-disks; with "
                         "--disk name the module (system, disk1..)" % wipe_devices[0])
    blank = None
    if auto_disks:
        blank = targets.probe_blank_disks(force_wipe=wipe_devices)
        for r in blank[1]:
            log.info("not a target disk: %s: %s", r["path"], r["reason"])
    elif "system" not in roots and "system" not in disk_map:
        log.warning("no --disk system=/dev/X nor --target-root system=DIR: PREPARING will "
                    "fail until they are given")
    extra = {"disks": disk_map, "force_wipe": wipe_modules, "provider": provider,
             "auto_disks": auto_disks, "force_wipe_devices": wipe_devices,
             "output": os.path.abspath(output) if output else None,
             "no_verify_boot": no_verify_boot, "skip_mount_types": list(skip_mount_types),
             "verify_boot": settings.get("verify_boot"), "cloud_config": cloud_config_path,
             "cloud_api": {"endpoint": cloud_endpoint, "protocol": cloud_protocol,
                           "metadata_endpoint": metadata_endpoint,
                           "poll_interval": cloud_poll_interval}}
    ttl = parse_duration(token_ttl)
    address = address or guess_address(bind)
    store, status = prepare_state(state_dir, bind, address, control_port, data_port, roots,
                                  ttl, None if no_console else console, extra=extra,
                                  blank=blank)
    if provider == "aliyun":  # a too-narrow RAM role stops here, not after the copy
        cloudimage.check_role_at_start(store.dir, extra)
    steps.restore_mounts(store)  # disks waiting for data are mounted before the relay starts
    datachannel.ensure_rsyncd_conf(store.dir)
    logdir = os.path.join(store.dir, "logs")
    ports = {"api": ("control", bind, control_port), "datachannel": ("data", bind, data_port)}
    children = [Child(n, a, ports.get(n))
                for n, a in child_argvs(store.dir, bind, control_port, data_port, workers)]
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("serving migration %s on %s (control %d, data %d)",
             status["migration_id"], bind, control_port, data_port)
    click.echo("go2aliyun-receiver: migration %s, address %s, fingerprint %s, ports %d/%d; "
               "the token is in %s" % (status["migration_id"], address, status["fingerprint"],
                                       control_port, data_port,
                                       store.path(STATUS_FILE)))
    try:
        supervise(children, logdir, stop)
    finally:
        os.close(lock_fd)
    log.info("stopped")


@cli.group()
def token():
    """One-time tokens."""


@token.command("new")
@state_option
@click.option("--token-ttl", default="24h", show_default=True)
@click.option("--console", default=None, help="also print to this console device")
def token_new(state_dir, token_ttl, console):
    """Issue a fresh one-time token; print token, address and fingerprint."""
    store = st.Store(os.path.abspath(state_dir))
    if not os.path.exists(tls.cert_path(store.dir)):
        raise ConfigError("no receiver in %s" % store.dir,
                          hint="run 'go2aliyun-receiver serve --state %s' first" % store.dir)
    tok, expires = issue_token(store, parse_duration(token_ttl))
    status = write_status(store, token=tok, token_expires_at=int(expires))
    text = render_status(status)
    click.echo(text, nl=False)
    to_console(console, text)


@cli.command()
@state_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def status(state_dir, as_json):
    """Show the migration's state and how to reach this receiver: address, fingerprint and
    the token this receiver made itself (none when the launcher made it: it printed it)."""
    store = st.Store(os.path.abspath(state_dir))
    doc = st.public(store.load())
    info = store.read(STATUS_FILE, {}) or {}
    out = {"migration": doc,
           "receiver": {k: info.get(k) for k in ("address", "fingerprint", "control_port",
                                                 "data_port", "token", "blank_disks")}}
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    click.echo("migration %s: %s (step %s)" % (doc["id"], doc["state"], doc["step"]))
    prog = doc.get("progress") or {}
    click.echo("progress: %s%% %s" % (prog.get("percent"), prog.get("message") or ""))
    if doc.get("error"):
        e = doc["error"]
        click.echo("error in %s: %s (%s)" % (e.get("step"), e.get("message"), e.get("code")))
    r = out["receiver"]
    click.echo("address: %s  fingerprint: %s" % (r["address"], r["fingerprint"]))
    if r.get("token"):
        click.echo("token: %s (one-time; 'go2aliyun-receiver token new' makes another)"
                   % r["token"])


@cli.command("_worker", hidden=True)
@state_option
def worker_cmd(state_dir):
    state_dir = os.path.abspath(state_dir)
    logs.setup(logfile=os.path.join(state_dir, "logs", "worker.log"))
    worker.serve(st.Store(state_dir))


@cli.command("_datachannel", hidden=True)
@state_option
@click.option("--bind", default="0.0.0.0")  # noqa: S104 - the receiver serves the source over the network
@click.option("--port", type=int, default=DATA_PORT)
def datachannel_cmd(state_dir, bind, port):
    state_dir = os.path.abspath(state_dir)
    logs.setup(logfile=os.path.join(state_dir, "logs", "datachannel.log"))
    datachannel.Relay(state_dir, bind, port).serve_forever()


def main(argv=None):
    """Entry point: run the click group; errors become exit codes (wire/climain.py)."""
    return run_click(cli, argv, "go2aliyun-receiver")


if __name__ == "__main__":
    sys.exit(main())
