"""The ``local`` provider: the cloud interface with no cloud at all, every step real.

* an instance is the receiver appliance (``go2aliyun-cloud build-image --provider local``)
  booted under qemu on a qcow2 overlay, with a cloud-init NoCloud seed (an ISO9660 volume
  labelled ``cidata`` holding the user-data launch rendered and a meta-data), its disks
  as virtio image files whose ``serial=`` is the disk id (so the guest sees
  ``/dev/disk/by-id/virtio-<disk id>``, as on ECS), and the receiver's ports forwarded by
  qemu user networking on ``address`` (qemu may run in a network namespace: ``netns``).
  The qemu process is daemonised with a pidfile and a QMP socket; its run state is the
  instance status (``prelaunch``/``paused`` -> Pending, ``running`` -> Running, gone ->
  Stopped);
* a snapshot is a copy of a disk file (``qemu-img convert -U``, taken after the receiver
  unmounted and synced the disks), made by a detached helper so its progress can be
  watched;
* an image is a folder ``<output>/<image name>/`` with one qcow2 per disk (system disk
  first) and ``image.json``; it becomes Available only after a verification boot of its
  disks on the host (wire.bootcheck) reached a login prompt, else CreateFailed with
  the console tail;
* VPC, vSwitch and security group have no local meaning: they are honest bookkeeping in
  the state folder, so launch's flow and cleanup run unchanged.

Everything is recorded in ``<state_dir>/local-cloud.json`` (under a lock); every create
honours its client token.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time

from image_build.cloud.base import Cloud, Disk, Instance
from wire import bootcheck, runner
from wire.errors import CloudError, CommandError
from wire.manifest import IMAGE_FILE, render_image_description

log = logging.getLogger(__name__)

STATE_FILE = "local-cloud.json"
ZONE = "local-a"
GUEST_ADDRESS = "10.0.2.15"  # qemu user networking gives the guest this address
RECEIVER_PORTS = (8080, 8703)
VERIFY_CONSOLE = "verification-console.log"
QMP_SOCKET = "qmp"  # in the instance folder; qemu binds it relative to there
PRODUCT = "go2aliyun local instance"  # the DMI product name of an instance


def disk_id_for(instance_token, name):
    """The id of a disk of an instance (pure): 20 characters, the most a virtio serial
    holds, so ``/dev/disk/by-id/virtio-<id>`` names exactly this disk."""
    return "d-" + hashlib.sha256(("%s/%s" % (instance_token, name)).encode()).hexdigest()[:18]


def render_meta_data(instance_id, hostname="go2aliyun-receiver"):
    return "instance-id: %s\nlocal-hostname: %s\n" % (instance_id, hostname)


def render_instance_argv(instance_dir, disks, seed, address, ports, memory_mib=2048, smp=1,
                         accel="tcg", start_paused=False):
    """qemu argv for an instance (pure). ``disks``: [(file, serial)], the instance's own
    system disk first; ``seed``: the NoCloud ISO, or None (launched with no user-data, as
    from the ECS console); ``ports``: {guest port: host port} forwarded on ``address``.
    The firmware names the machine ``PRODUCT`` (as ECS's says "Alibaba Cloud ECS"): a
    receiver launched with no user-data learns from it that the host verifies the boot
    and makes the image (receiver/cli.py ``PLATFORMS``)."""
    fwd = ",".join("hostfwd=tcp:%s:%d-:%d" % (address, host, guest)
                   for guest, host in sorted(ports.items()))
    return bootcheck.render_qemu_argv(
        disks, os.path.join(instance_dir, "console.log"), memory_mib=memory_mib, smp=smp,
        accel=accel, name=os.path.basename(instance_dir), netdev="user,id=n0," + fwd,
        extra=["-daemonize", "-pidfile", os.path.join(instance_dir, "qemu.pid"),
               # relative: qemu starts in the instance folder (a socket holds 107 bytes)
               "-qmp", "unix:%s,server=on,wait=off" % QMP_SOCKET,
               "-smbios", "type=1,manufacturer=go2aliyun,product=%s" % PRODUCT]
        + (["-drive", "file=%s,if=ide,media=cdrom,format=raw,readonly=on" % seed]
           if seed else [])
        + (["-S"] if start_paused else []))


def parse_qemu_img_progress(text):
    """Last percentage of ``qemu-img convert -p`` output, e.g. ``(42.17/100%)`` -> 42."""
    found = re.findall(r"\((\d+(?:\.\d+)?)/100%\)", text)
    return int(float(found[-1])) if found else 0


def _alive(pid):
    """True when process ``pid`` runs (a zombie does not count)."""
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            stat = f.read()
    except (OSError, ValueError, TypeError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as f:
            return f.read().decode("utf-8", "replace").split("\0")
    except (OSError, ValueError, TypeError):
        return []


def unix_connect(sock, path):
    """Connect the AF_UNIX ``sock`` to ``path`` even when the path is longer than a
    socket address holds (107 bytes; a deep --local-dir or pytest's tmp_path): the
    folder is reached through /proc/self/fd."""
    if len(os.fsencode(path)) < 108:
        sock.connect(path)
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect("/proc/self/fd/%d/%s" % (fd, os.path.basename(path)))
    finally:
        os.close(fd)


def qmp_execute(sock_path, commands, timeout=5.0):
    """QMP commands on qemu's monitor socket, in order: ``commands`` is
    [(name, arguments or None)]; returns their ``return`` values. qemu's refusal raises
    OSError with its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out = []
    try:
        unix_connect(s, sock_path)
        f = s.makefile("rwb")
        json.loads(f.readline().decode("utf-8"))  # the greeting
        for name, args in [("qmp_capabilities", None)] + list(commands):
            msg = {"execute": name}
            if args:
                msg["arguments"] = args
            f.write(json.dumps(msg).encode("utf-8") + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    raise OSError("qemu closed its monitor during %s" % name)
                answer = json.loads(line.decode("utf-8"))
                if "error" in answer:
                    raise OSError("qemu refused %s %s: %s" % (name, args or "",
                                                              answer["error"]))
                if "return" in answer:
                    break
            if name != "qmp_capabilities":
                out.append(answer["return"])
        return out
    finally:
        s.close()


def qmp(sock_path, command, timeout=5.0):
    """One QMP command without arguments; returns its ``return`` value."""
    return qmp_execute(sock_path, [(command, None)], timeout=timeout)[0]


class LocalCloud(Cloud):
    name = "local"

    def __init__(self, state_dir, output_dir=None, address="127.0.0.1", ports=None,
                 netns=None, memory_mib=2048, smp=1, accel="tcg", verify_images=True,
                 verify_timeout=600, autostart=True, region_id="local", **kw):
        kw.setdefault("poll_interval", 1.0)
        super(LocalCloud, self).__init__(**kw)
        self.state_dir = os.path.abspath(state_dir)
        self.output_dir = os.path.abspath(output_dir or os.path.join(self.state_dir, "images"))
        self.address = address
        self.ports = dict(ports or {p: p for p in RECEIVER_PORTS})
        self.netns = netns
        self.memory_mib = memory_mib
        self.smp = smp
        self.accel = accel
        self.verify_images = verify_images
        self.verify_timeout = verify_timeout
        self.autostart = autostart
        self.region_id = region_id
        os.makedirs(self.state_dir, exist_ok=True)

    # -- the record ------------------------------------------------------------
    @property
    def state_path(self):
        return os.path.join(self.state_dir, STATE_FILE)

    @contextlib.contextmanager
    def _locked(self):
        """The state, locked; saved atomically when the block ends without error."""
        with open(os.path.join(self.state_dir, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            fd, tmp = tempfile.mkstemp(prefix=".local-cloud.", dir=self.state_dir)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.state_path)

    def _read(self):
        data = {}
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                data = json.load(f)
        for kind in ("tokens", "vpcs", "vswitches", "groups", "instances", "disks",
                     "snapshots", "images"):
            data.setdefault(kind, {})
        return data

    def _create(self, kind, prefix, token, make):
        """Create once per client token: ``make(data, new_id)`` fills the record."""
        with self._locked() as data:
            key = "%s/%s" % (kind, token)
            if key in data["tokens"] and data["tokens"][key] in data[kind]:
                return data["tokens"][key]
            new_id = prefix + secrets.token_hex(8)
            data[kind][new_id] = make(data, new_id)
            data["tokens"][key] = new_id
            return new_id

    def _get(self, kind, res_id):
        return self._read()[kind].get(res_id)

    # -- network: bookkeeping ---------------------------------------------------
    def zones(self):
        return [ZONE]

    def create_vpc(self, cidr, name, client_token, tags=None):
        return self._create("vpcs", "vpc-local", client_token,
                            lambda d, i: {"id": i, "cidr": cidr, "name": name,
                                          "status": "Available", "tags": dict(tags or {})})

    def vpc(self, vpc_id):
        v = self._get("vpcs", vpc_id)
        return {"id": v["id"], "status": v["status"], "cidr": v["cidr"]} if v else None

    def create_vswitch(self, vpc_id, zone_id, cidr, name, client_token, tags=None):
        if self.vpc(vpc_id) is None:
            raise CloudError("VPC %s does not exist" % vpc_id, code="cloud.vpc_missing")
        return self._create("vswitches", "vsw-local", client_token,
                            lambda d, i: {"id": i, "vpc_id": vpc_id, "zone_id": zone_id,
                                          "cidr": cidr, "name": name, "status": "Available",
                                          "tags": dict(tags or {})})

    def vswitch(self, vswitch_id):
        v = self._get("vswitches", vswitch_id)
        if not v:
            return None
        return {k: v[k] for k in ("id", "vpc_id", "zone_id", "status", "cidr")}

    def create_security_group(self, vpc_id, name, client_token, tags=None):
        return self._create("groups", "sg-local", client_token,
                            lambda d, i: {"id": i, "vpc_id": vpc_id, "name": name,
                                          "rules": [], "tags": dict(tags or {})})

    def allow_ingress(self, group_id, ports, source_cidr, client_token):
        with self._locked() as data:
            group = data["groups"].get(group_id)
            if group is None:
                raise CloudError("security group %s does not exist" % group_id,
                                 code="cloud.security_group_missing")
            for port in ports:
                if [port, source_cidr] not in group["rules"]:
                    group["rules"].append([int(port), source_cidr])
            group["rules"].sort()

    def revoke_ingress(self, group_id, ports, source_cidr):
        with self._locked() as data:
            group = data["groups"].get(group_id)
            if group is not None:
                group["rules"] = [r for r in group["rules"]
                                  if not (r[1] == source_cidr and r[0] in ports)]

    def find_tagged(self, tags):
        data = self._read()

        def has(rec):
            have = rec.get("tags") or {}
            return all(have.get(k) == v for k, v in tags.items())

        insts = {i: r for i, r in data["instances"].items() if has(r) and not r.get("deleted")}
        return {
            "instances": [{"id": i, "status": self._status(r)} for i, r in insts.items()],
            "disks": [{"id": d, "instance_id": r["instance_id"]}
                      for d, r in data["disks"].items() if r["instance_id"] in insts],
            "images": [self.image(i) for i, r in data["images"].items() if has(r)],
            "snapshots": [{"id": i, "disk_id": r["disk_id"]}
                          for i, r in data["snapshots"].items() if has(r)],
            "security_groups": [{"id": i, "vpc_id": r["vpc_id"]}
                                for i, r in data["groups"].items() if has(r)],
            "vswitches": [{"id": i, "vpc_id": r["vpc_id"]}
                          for i, r in data["vswitches"].items() if has(r)],
            "vpcs": [{"id": i} for i, r in data["vpcs"].items() if has(r)],
        }

    def ingress_rules(self, group_id):
        g = self._get("groups", group_id)
        return [tuple(r) for r in g["rules"]] if g else []

    def delete_security_group(self, group_id):
        self._delete("groups", group_id)

    def delete_vswitch(self, vswitch_id):
        self._delete("vswitches", vswitch_id)

    def delete_vpc(self, vpc_id):
        self._delete("vpcs", vpc_id)

    def _delete(self, kind, res_id):
        with self._locked() as data:
            data[kind].pop(res_id, None)

    # -- instances -------------------------------------------------------------
    def _boot_image(self, image_id):
        if image_id and os.path.isfile(image_id):
            return os.path.abspath(image_id)
        raise CloudError("the receiver image %r is not a file" % image_id,
                         code="cloud.InvalidImageId.NotFound",
                         hint="pass the appliance made by `go2aliyun-cloud build-image "
                              "--provider local` (a qcow2 path) as --receiver-image")

    def receiver_config(self, config, instance_token):
        """What the receiver inside gets in cloud.json: the target disks by id (the ids
        this provider gives them), VERIFYING done here on the host."""
        config = dict(config)
        config["provider"] = "local"
        config["verify_boot"] = "provider"
        config["target_disk_ids"] = [disk_id_for(instance_token, n)
                                     for n in config.get("target_disks") or []]
        return config

    def run_instance(self, spec, client_token):
        boot = self._boot_image(spec.image_id)
        key = "instances/%s" % client_token
        with self._locked() as data:
            if key in data["tokens"] and data["tokens"][key] in data["instances"]:
                return data["tokens"][key]
            inst_id = "i-local" + secrets.token_hex(5)
            idir = os.path.join(self.state_dir, "instances", inst_id)
            disks = [{"id": disk_id_for(client_token, "system"), "role": "system",
                      "device": "/dev/vda", "size_gib": int(spec.system_disk_gib),
                      "name": "system", "file": os.path.join(idir, "system.qcow2")}]
            for n, (name, size) in enumerate(spec.data_disks, 1):
                disks.append({"id": disk_id_for(client_token, name), "role": "data",
                              "device": "/dev/vd" + chr(ord("a") + n), "size_gib": int(size),
                              "name": name, "file": os.path.join(idir, "%s.qcow2" % name)})
            data["instances"][inst_id] = {
                "id": inst_id, "dir": idir, "name": spec.name, "image": boot,
                "vswitch_id": spec.vswitch_id, "security_group_id": spec.security_group_id,
                "disks": disks, "address": self.address, "ports": self.ports,
                "netns": self.netns, "pid": None, "deleted": False, "tags": spec.tags}
            for d in disks:
                data["disks"][d["id"]] = {"instance_id": inst_id, "file": d["file"],
                                          "name": d["name"], "size_gib": d["size_gib"]}
            data["tokens"][key] = inst_id
        self._start(inst_id, spec, boot)
        return inst_id

    def _start(self, inst_id, spec, boot):
        rec = self._get("instances", inst_id)
        idir = rec["dir"]
        os.makedirs(idir, exist_ok=True)
        disks = rec["disks"]
        boot = _keep_boot_image(boot, os.path.join(idir, "boot-image"))
        runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", _format(boot), "-b", boot,
                    disks[0]["file"], "%dG" % max(disks[0]["size_gib"], _gib(boot))])
        for d in disks[1:]:
            runner.run(["qemu-img", "create", "-q", "-f", "qcow2", d["file"],
                        "%dG" % d["size_gib"]])
        seed = self._seed(idir, inst_id, spec.user_data) if spec.user_data is not None \
            else None
        argv = render_instance_argv(idir, [(d["file"], d["id"]) for d in disks], seed,
                                    self.address, self.ports, memory_mib=self.memory_mib,
                                    smp=self.smp, accel=self.accel,
                                    start_paused=not self.autostart)
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns] + argv
        log.info("starting %s: %s", inst_id, " ".join(argv))
        with open(os.path.join(idir, "qemu.log"), "wb") as out:
            proc = runner.start(argv, stdin=runner.DEVNULL, stdout=out, stderr=out, cwd=idir)
            code = proc.wait(120)
        if code != 0:
            with open(os.path.join(idir, "qemu.log"), errors="replace") as f:
                said = f.read()[-1500:]
            raise CloudError("qemu could not start instance %s: %s" % (inst_id, said.strip()),
                             code="cloud.instance_start_failed",
                             hint="see %s; is the address %s on this host (or --netns)?"
                                  % (os.path.join(idir, "qemu.log"), self.address))
        pid = _read_pid(os.path.join(idir, "qemu.pid"))
        with self._locked() as data:
            data["instances"][inst_id]["pid"] = pid

    def _seed(self, idir, inst_id, user_data):
        """The NoCloud seed ISO holding ``user_data`` and a meta-data."""
        seed_dir = os.path.join(idir, "seed")
        os.makedirs(seed_dir, exist_ok=True)
        with open(os.path.join(seed_dir, "user-data"), "w") as f:
            f.write(user_data)
        os.chmod(os.path.join(seed_dir, "user-data"), 0o600)
        with open(os.path.join(seed_dir, "meta-data"), "w") as f:
            f.write(render_meta_data(inst_id))
        seed = os.path.join(idir, "seed.iso")
        tool = runner.which("genisoimage") or runner.which("xorrisofs")
        if not tool:
            raise CommandError("neither genisoimage nor xorriso is installed",
                               hint="apt-get install genisoimage")
        runner.run([tool, "-quiet", "-output", seed, "-volid", "cidata", "-joliet", "-rock",
                    os.path.join(seed_dir, "user-data"), os.path.join(seed_dir, "meta-data")])
        shutil.rmtree(seed_dir)  # the user-data carries the receiver's key: keep it in the ISO only
        os.chmod(seed, 0o600)
        return seed

    def _status(self, rec):
        if not rec.get("pid") or not _alive(rec["pid"]):
            return "Pending" if not rec.get("pid") else "Stopped"
        try:
            run_state = qmp(os.path.join(rec["dir"], QMP_SOCKET), "query-status")["status"]
        except (OSError, ValueError, KeyError):
            return "Pending"
        return {"running": "Running", "prelaunch": "Pending", "paused": "Pending",
                "inmigrate": "Pending", "shutdown": "Stopped"}.get(run_state, "Stopping")

    def instance(self, instance_id):
        rec = self._get("instances", instance_id)
        if not rec or rec.get("deleted"):
            return None
        return Instance(instance_id, self._status(rec), public_ip=rec["address"],
                        private_ip=GUEST_ADDRESS, zone_id=ZONE, vswitch_id=rec["vswitch_id"],
                        security_group_ids=[rec["security_group_id"]])

    def instance_disks(self, instance_id):
        rec = self._get("instances", instance_id)
        if not rec or rec.get("deleted"):
            raise CloudError("instance %s does not exist" % instance_id,
                             code="cloud.instance_missing")
        return [Disk(d["id"], d["role"], d["device"], d["size_gib"],
                     d["name"] if d["role"] == "data" else "") for d in rec["disks"]]

    def console(self, instance_id):
        """The instance's serial console so far (the ECS console screenshot's twin)."""
        rec = self._get("instances", instance_id)
        path = os.path.join(rec["dir"], "console.log") if rec else ""
        if not rec or not os.path.exists(path):
            return ""
        with open(path, errors="replace") as f:
            return f.read()

    def delete_instance(self, instance_id):
        rec = self._get("instances", instance_id)
        if not rec or rec.get("deleted"):
            return
        # the pid file too: a launch stopped between qemu's start and its record
        pid = rec.get("pid") or _read_pid(os.path.join(rec["dir"], "qemu.pid"))
        if pid and _alive(pid) and rec["dir"] in " ".join(_cmdline(pid)):
            _stop(pid)
        with self._locked() as data:
            r = data["instances"][instance_id]
            r["deleted"] = True
            for d in r["disks"]:
                data["disks"].pop(d["id"], None)
        keep = os.path.join(self.state_dir, "logs")
        os.makedirs(keep, exist_ok=True)
        console = os.path.join(rec["dir"], "console.log")
        if os.path.exists(console):
            shutil.copyfile(console, os.path.join(keep, instance_id + ".console.log"))
        shutil.rmtree(rec["dir"], ignore_errors=True)

    # -- snapshots ---------------------------------------------------------------
    def create_snapshot(self, disk_id, name, client_token, tags=None):
        disk = self._get("disks", disk_id)
        if disk is None:
            raise CloudError("disk %s does not exist" % disk_id, code="cloud.disk_missing")
        folder = os.path.join(self.state_dir, "snapshots")
        os.makedirs(folder, exist_ok=True)
        made = []

        def make(data, snap_id):
            made.append(snap_id)
            return {"id": snap_id, "name": name, "disk_id": disk_id,
                    "size_gib": disk["size_gib"], "tags": dict(tags or {}),
                    "file": os.path.join(folder, snap_id + ".raw"), "pid": None}

        snap_id = self._create("snapshots", "s-local", client_token, make)
        if made:
            rec = self._get("snapshots", snap_id)
            log.info("snapshot %s of %s", snap_id, disk["file"])
            pid = _spawn(["snapshot", disk["file"], rec["file"]], rec["file"] + ".log")
            with self._locked() as data:
                data["snapshots"][snap_id]["pid"] = pid
        return snap_id

    def snapshot(self, snapshot_id):
        rec = self._get("snapshots", snapshot_id)
        if not rec:
            return None
        if os.path.exists(rec["file"]):
            return {"id": snapshot_id, "status": "accomplished", "progress": "100%"}
        log_text = _read_text(rec["file"] + ".log")
        if rec.get("pid") is None or _alive(rec["pid"]):
            return {"id": snapshot_id, "status": "progressing",
                    "progress": "%d%%" % parse_qemu_img_progress(log_text)}
        return {"id": snapshot_id, "status": "failed", "progress": "0%",
                "reason": log_text[-1000:]}

    def delete_snapshot(self, snapshot_id):
        with self._locked() as data:
            rec = data["snapshots"].pop(snapshot_id, None)
        if rec:
            for path in (rec["file"], rec["file"] + ".part", rec["file"] + ".log"):
                if os.path.exists(path):
                    os.unlink(path)

    # -- images --------------------------------------------------------------------
    def find_images_by_name(self, name):
        return [{"id": i["id"], "status": i["status"]}
                for i in sorted(self._read()["images"].values(), key=lambda i: i["id"])
                if i["name"] == name]

    def image(self, image_id):
        rec = self._get("images", image_id)
        if not rec:
            return None
        out = {k: rec.get(k) for k in ("id", "name", "status", "progress", "path",
                                       "reason", "code", "console_tail")}
        out["snapshot_ids"] = [d["snapshot_id"] for d in rec.get("disks") or []]
        if rec["status"] == "Creating" and rec.get("pid") and not _alive(rec["pid"]):
            out.update(status="CreateFailed", reason="the image builder stopped: " +
                       _read_text(rec["log"])[-1000:])
        return out

    def create_image(self, spec, client_token):
        snaps = []
        for snap_id, _ in spec.disks:
            s = self._get("snapshots", snap_id)
            if not s or not os.path.exists(s["file"]):
                raise CloudError("snapshot %s is not accomplished" % snap_id,
                                 code="cloud.InvalidSnapshotId.NotReady")
            snaps.append(s)
        if self.find_images_by_name(spec.name) and not self._read()["tokens"].get(
                "images/" + client_token):
            raise CloudError("an image called %r already exists" % spec.name,
                             code="cloud.InvalidImageName.Duplicated",
                             api_code="InvalidImageName.Duplicated")
        made = []
        path = os.path.join(self.output_dir, spec.name)

        def make(data, image_id):
            made.append(image_id)
            return {"id": image_id, "name": spec.name, "status": "Creating", "progress": "0%",
                    "tags": dict(spec.tags),
                    "path": path, "pid": None, "log": path + ".log",
                    "verify": self.verify_images, "verify_timeout": self.verify_timeout,
                    "spec": {"name": spec.name, "platform": spec.platform,
                             "architecture": spec.architecture, "boot_mode": spec.boot_mode,
                             "description": spec.description},
                    "disks": [{"snapshot_id": s["id"], "file": s["file"],
                               "size_gib": int(size)} for s, (_, size) in zip(snaps, spec.disks)]}

        image_id = self._create("images", "m-local", client_token, make)
        if made:
            os.makedirs(self.output_dir, exist_ok=True)
            pid = _spawn(["image", self.state_dir, image_id], path + ".log")
            with self._locked() as data:
                data["images"][image_id]["pid"] = pid
        return image_id

    def delete_image(self, image_id):
        """Forget the image record (an image set already written stays: the user's)."""
        with self._locked() as data:
            data["images"].pop(image_id, None)

    def wait_image(self, image_id, progress=None):
        """As the base, but a failed verification boot says why, with the console tail."""
        def probe():
            img = self.image(image_id)
            if img is None:
                raise CloudError("image %s disappeared" % image_id, code="cloud.vanished")
            if img["status"] == "CreateFailed":
                raise CloudError("image %s failed: %s" % (image_id, img.get("reason")),
                                 code=img.get("code") or "cloud.image_failed",
                                 hint="the image set was not made; fix the cause and run "
                                      "finish again", console_tail=img.get("console_tail"))
            if progress:
                progress(img)
            return img if img["status"] == "Available" else None
        return self.wait_for("image %s to become Available" % image_id, probe,
                             self.timeouts["image"])

    def _set_image(self, image_id, **fields):
        with self._locked() as data:
            data["images"][image_id].update(fields)

    def build_image_set(self, image_id):
        """The image builder (runs detached, see :func:`main`): qcow2 per disk into
        ``<path>.part``, image.json, verification boot, rename, Available."""
        rec = self._get("images", image_id)
        final = rec["path"]
        part = final + ".part"
        if os.path.exists(part):
            shutil.rmtree(part)
        os.makedirs(part)
        files = []
        for n, d in enumerate(rec["disks"]):
            module = "system" if n == 0 else "disk%d" % n
            name = module + ".qcow2"
            self._set_image(image_id, progress="%d%%" % (80 * n // len(rec["disks"])))
            runner.run(["qemu-img", "convert", "-O", "qcow2", "-f", "raw", d["file"],
                        os.path.join(part, name)], timeout=6 * 3600)
            files.append((module, name, d["size_gib"]))
        spec = rec["spec"]
        desc = render_image_description(
            files, image_id=image_id, image_name=spec["name"], platform=spec["platform"],
            architecture=spec["architecture"], boot_mode=spec["boot_mode"],
            description=spec["description"])
        verdict = None
        if rec["verify"]:
            self._set_image(image_id, progress="80%")
            firmware = "uefi" if rec["spec"]["boot_mode"] == "UEFI" else "bios"
            v = bootcheck.boot_and_watch([d["file"] for d in rec["disks"]], firmware=firmware,
                                         timeout=rec["verify_timeout"],
                                         workdir=os.path.join(part, "verify"))
            verdict = v.to_dict()
            if not v.ok:
                self._set_image(image_id, status="CreateFailed", code=v.code,
                                reason="verification boot failed: %s" % v.reason,
                                console_tail=v.console[-4000:])
                return
            # the boot's whole console (colour codes removed) stays with the image set:
            # what "it boots" rests on
            with open(os.path.join(part, VERIFY_CONSOLE), "w") as f:
                f.write(v.console)
            shutil.rmtree(os.path.join(part, "verify"), ignore_errors=True)
        desc["verification"] = verdict or {"ok": None, "skipped": True}
        with open(os.path.join(part, IMAGE_FILE), "w") as f:
            json.dump(desc, f, indent=2, sort_keys=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(part, final)
        self._set_image(image_id, status="Available", progress="100%")


def _keep_boot_image(image, where):
    """The instance's own name for its boot image (a hard link, else a copy): its system
    disk is an overlay on it, and the appliance cache may drop the file it came from
    (a newer appliance prunes the old ones) while the instance runs."""
    if os.path.exists(where):
        return where
    try:
        os.link(image, where)
    except OSError:
        shutil.copyfile(image, where + ".part")
        os.rename(where + ".part", where)
    return where


def _format(path):
    info = json.loads(runner.run(["qemu-img", "info", "-U", "--output=json", path]).stdout)
    return info["format"]


def _gib(path):
    info = json.loads(runner.run(["qemu-img", "info", "-U", "--output=json", path]).stdout)
    return -(-int(info["virtual-size"]) // (1024 ** 3))


def _read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _spawn(args, logfile):
    """Start this module's helper detached (its own session); returns its pid."""
    with open(logfile, "wb") as out:
        proc = runner.start([sys.executable, "-m", "image_build.cloud.local"] + list(args),
                            stdin=runner.DEVNULL, stdout=out, stderr=out,
                            start_new_session=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__)))))
    return proc.pid


def _stop(pid, timeout=15):
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.time() < deadline + 10:
            time.sleep(0.2)


def copy_disk(src, dst):
    """A snapshot: the disk file as a sparse raw copy, written as .part and renamed.
    ``-U``: the instance still runs; the receiver unmounted and synced the disk first."""
    runner.run(["qemu-img", "convert", "-U", "-p", "-O", "raw", src, dst + ".part"],
               timeout=6 * 3600, capture=False)
    os.rename(dst + ".part", dst)


def main(argv=None):
    """The detached helpers: ``snapshot SRC DST`` and ``image STATE_DIR IMAGE_ID``."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args[:1] == ["snapshot"]:
        copy_disk(args[1], args[2])
    elif args[:1] == ["image"]:
        cloud = LocalCloud(args[1])
        try:
            cloud.build_image_set(args[2])
        except Exception as e:  # noqa: BLE001 - any failure must mark the image failed
            cloud._set_image(args[2], status="CreateFailed", reason=str(e))
            raise
    else:
        raise SystemExit("usage: python3 -m image_build.cloud.local snapshot SRC DST | "
                         "image STATE_DIR IMAGE_ID")
    return 0


if __name__ == "__main__":
    sys.exit(main())
