"""Issue 4's GPT + ESP (vfat) + LVM root case, prepared by the receiver INSIDE the
appliance VM (this host's kernel has neither vfat nor device-mapper; the appliance's
Debian kernel under qemu TCG has both).

The appliance is launched with ``go2aliyun-cloud --provider local launch`` from the
``src`` namespace (qemu in ``ecs``), as test_local_provider does. Before the session,
one more disk is hot-plugged into the running VM over QMP (tests/helpers/qmp.py): a raw
file that already holds a PV and a volume group named like the source's VG, made on the
host with pvcreate/vgcreate (no device-mapper needed). The receiver therefore holds a
VG of that name and must make ours under its working name ``g2a-<name>``
(receiver/disks/apply.py ``rename_vg``; the source name comes back at release, after
CONVERTING, which this test does not reach).

A session is opened in ``src`` as the source does (source_script.session with the
launcher's token and fingerprint), a manifest + plan for GPT (ESP + LVM PV with root and
swap LVs) is sent and prepared, and one sync pass pushes two files (one for the LV, one
for the ESP) through the real data channel; then the system target's disk file is read
back on the host (``qemu-img convert -U`` to raw, attached read-only with
image_build/loopdev.py) and checked with sfdisk --json, blkid -p, pvs/vgs/lvs --readonly,
dumpe2fs/e2fsck/debugfs on the root LV (copied out from its extent offset: the host
cannot activate it) and mtools on the ESP. The fixture deletes the instance (stops
qemu), the namespaces and the loop devices, even on failure.
"""

import json
import os
import random
import sys
import time
import uuid

import pytest

from image_build import appliance, loopdev
from image_build.cloud.local import LocalCloud
from source_script.inventory import parsers
from tests.helpers import qmp
from tests.helpers.netns import netns_pair
from tests.image_build.test_local_provider import Run, _show
from tests.receiver.disks import layouts as L
from wire import runner

pytestmark = [pytest.mark.root, pytest.mark.qemu]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB, GiB = 1 << 20, 1 << 30
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
ESP_SIZE = 100 * MiB
SYSTEM_GIB = 20
PUSHED = ("etc/g2a-vm-disks.txt", "boot/efi/EFI/g2a/hello.txt")
WRITEBACK_WAIT = 40
HELD_DISK_MIB = 64
# the guest kernel's line for the hot-plugged disk: "virtio_blk virtio4: [vdc] 131072
# 512-byte logical blocks (67.1 MB/64.0 MiB)"
HELD_DISK_SEEN = "] %d 512-byte logical blocks" % (HELD_DISK_MIB * 2048)
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": "g2a-vm-disks",
          "system_disk_size": SYSTEM_GIB, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0, "data_disks": []}

# Runs in `src`: a session as the source opens it, the manifest and plan, PREPARING,
# the status document once the receiver waits for data, then one sync pass of a small
# tree (one file for the LV's ext4, one for the ESP) through the real TLS data channel.
PREPARE = r"""
import json, os, sys, tempfile
from source_script import push, session, tlsbridge
address, fingerprint, request, tree = sys.argv[1:5]
token = os.environ["GO2ALIYUN_TOKEN"]  # never in argv
with open(request) as f:
    req = json.load(f)
sdir = tempfile.mkdtemp()
client, answer = session.open_session(address, fingerprint, token, sdir)
client.put_manifest(req["manifest"], req["plan"])
client.prepare()
ready = session.wait_for(client, lambda d: d.get("state") == "READY_FOR_DATA",
                         timeout=900, interval=2)
sync = client.start_sync(False)
module = (sync.get("modules") or answer["modules"])["system"]["module"]
bridge = tlsbridge.bridge_env(answer["data_port"], fingerprint,
                              os.path.join(sdir, session.CERT_FILE),
                              os.path.join(sdir, session.KEY_FILE))
stats = push.push_disk("system", tree, address, module, bridge, workdir=sdir)
client.finish_sync(sync["pass"], {"system": {"bytes": stats.get("total_size", 0),
                                             "files": stats.get("files", 0)}})
print(json.dumps({"doc": ready, "pushed": stats.get("files")}))
"""

def gpt_esp_lvm_root(vg_name):
    """The source: GPT disk sda with an ESP (sda1, vfat at /boot/efi) and an LVM PV
    (sda2) of ``vg_name`` holding root (ext4 at /) and swap_1; random ids throughout."""
    pv_size = 8 * GiB
    esp_id = "%08X" % random.getrandbits(32)
    parts = [
        L.part("sda", 1, MiB, ESP_SIZE, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
               str(uuid.uuid4()).upper(), name="EFI System Partition", flags=["esp"]),
        L.part("sda", 2, MiB + ESP_SIZE, pv_size, "E6D6D379-F507-44C2-A23C-238F2A3DF928",
               str(uuid.uuid4()).upper(), flags=["lvm"]),
    ]
    lvm = {
        "pvs": [{"name": "/dev/sda2", "uuid": "pv-uuid-1", "vg": vg_name,
                 "size_bytes": pv_size, "free_bytes": GiB}],
        "vgs": [{"name": vg_name, "uuid": "vg-uuid-1", "size_bytes": pv_size,
                 "free_bytes": GiB, "extent_size_bytes": 4 * MiB, "pv_count": 1,
                 "lv_count": 2}],
        "lvs": [
            {"name": "root", "vg": vg_name, "uuid": "lv-root", "size_bytes": 6 * GiB,
             "path": "/dev/%s/root" % vg_name, "active": True, "segtype": "linear"},
            {"name": "swap_1", "vg": vg_name, "uuid": "lv-swap", "size_bytes": GiB,
             "path": "/dev/%s/swap_1" % vg_name, "active": True, "segtype": "linear"},
        ],
    }
    esp = L.fs("/dev/sda1", "vfat", "%s-%s" % (esp_id[:4], esp_id[4:]), "/boot/efi",
               ESP_SIZE, MiB, label="ESP")
    esp["vfat_id"] = esp_id
    root = L.fs("/dev/mapper/%s-root" % vg_name, "ext4", str(uuid.uuid4()), "/", 6 * GiB,
                GiB, ext=L.EXT4_DEBIAN12)
    return L.manifest(
        [L.disk("sda", pv_size + ESP_SIZE + 2 * MiB, "gpt", str(uuid.uuid4()).upper(),
                parts)],
        [esp, root],
        [L.swap("/dev/mapper/%s-swap_1" % vg_name, GiB, uuid=str(uuid.uuid4()), kind="lv")],
        lvm=lvm, firmware="uefi")


def make_held_vg(path, vg_name):
    """A raw disk file holding one PV and VG ``vg_name`` (with an LV, never activated),
    made on a loop device here; every LVM command limited to that device."""
    with open(path, "wb") as f:
        f.truncate(HELD_DISK_MIB * MiB)
    with loopdev.attached(path, partitions=()) as dev:
        scope = ["--devices", dev]
        runner.run(["pvcreate", "-q", "-y", "-ff"] + scope + [dev], env=LVM_ENV)
        runner.run(["vgcreate", "-q"] + scope + [vg_name, dev], env=LVM_ENV)
        runner.run(["lvcreate", "-q", "--driverloaded", "n", "--activate", "n", "--zero", "n",
                    "-y", "-L", "16m", "-n", "held"] + scope + [vg_name], env=LVM_ENV)
        names = _lvm_report(["vgs"], dev, "vg_name")
    assert names == [{"vg_name": vg_name}], names


def _lvm_report(cmd, dev, fields):
    """``pvs``/``vgs``/``lvs`` --readonly on device ``dev`` only, as [{field: value}]."""
    r = runner.run(cmd + ["--readonly", "--devices", dev, "--reportformat", "json",
                          "--units", "b", "--nosuffix", "-o", fields], env=LVM_ENV)
    report = json.loads(r.stdout)["report"][0]
    return next(v for k, v in report.items())


def extract(raw, offset, size, out):
    """Bytes ``offset`` .. ``offset + size`` of image ``raw`` as their own sparse raw
    file ``out`` (qemu-img reads only the allocated parts): the host cannot activate an
    LV, so its filesystem is taken from where its extents are."""
    runner.run(["qemu-img", "convert", "-O", "raw", "--image-opts",
                "driver=raw,offset=%d,size=%d,file.driver=file,file.filename=%s"
                % (offset, size, raw), out], timeout=600)
    return out


@pytest.fixture(scope="module")
def appliance_image():
    return appliance.build(progress=lambda m: print("build-image:", m))


@pytest.fixture(scope="module")
def vm(tmp_path_factory, appliance_image):
    """The appliance launched for one blank 20 GiB target system disk; one more disk
    with the held VG hot-plugged. Whatever happens, our qemu stops, the namespaces go."""
    base = str(tmp_path_factory.mktemp("vm-disks"))
    work = os.path.join(base, "work")
    os.makedirs(os.path.join(work, "Excludes"))
    with open(os.path.join(work, "user_config.json"), "w") as f:
        json.dump(CONFIG, f)
    local_dir = os.path.join(base, "local")
    vg_name = "g2avm%s" % uuid.uuid4().hex[:6]
    held = os.path.join(base, "held-vg.raw")
    make_held_vg(held, vg_name)
    with netns_pair() as net:
        try:
            r = Run(net, work, local_dir, None)
            started = time.time()
            res = r.cli("launch", "--receiver-image", appliance_image, "--source-cidr",
                        net.src_ip, "--json", ns=net.src, timeout=900)
            assert res.returncode == 0, _show(res)
            r.launched = json.loads(res.stdout)
            print("launch %.0f s" % (time.time() - started))
            r.base, r.vg_name = base, vg_name
            rec = r.cloud._get("instances", r.instance_id)
            r.qmp_sock = os.path.join(rec["dir"], "qmp")
            r.held_serial = qmp.hotplug_disk(r.qmp_sock, held, "g2a-held-vg")
            yield r
        finally:
            if os.path.isdir(local_dir):
                cloud = LocalCloud(local_dir)
                for inst_id in list(cloud._read()["instances"]):
                    cloud.delete_instance(inst_id)


@pytest.fixture(scope="module")
def prepared(vm):
    """The receiver prepared the GPT + ESP + LVM layout; its status document."""
    assert vm.held_serial in qmp.devices(vm.qmp_sock)
    # the guest's kernel names the hot-plugged disk on the console (ACPI hotplug under
    # TCG takes a few seconds); the receiver's `vgs` at PREPARING then finds its VG
    deadline = time.time() + 180
    while HELD_DISK_SEEN not in vm.cloud.console(vm.instance_id):
        assert time.time() < deadline, "the guest did not take the hot-plugged disk " \
            "in:\n" + vm.console()
        time.sleep(2)
    time.sleep(3)
    m = gpt_esp_lvm_root(vm.vg_name)
    plan = L.plan()
    plan["system_disk_size"] = SYSTEM_GIB
    request = os.path.join(vm.base, "request.json")
    with open(request, "w") as f:
        json.dump({"manifest": m, "plan": plan}, f)
    tree = os.path.join(vm.base, "tree")
    marks = {path: "%s %s\n" % (path, uuid.uuid4().hex) for path in PUSHED}
    for path, text in marks.items():
        os.makedirs(os.path.join(tree, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(tree, path), "w") as f:
            f.write(text)
    started = time.time()
    r = vm.net.run(vm.net.src, [sys.executable, "-c", PREPARE, vm.net.ecs_ip,
                                vm.launched["fingerprint"], request, tree],
                   ok_codes=None, timeout=1200, cwd=REPO,
                   env={"PYTHONPATH": REPO, "GO2ALIYUN_TOKEN": vm.launched["token"]})
    assert r.returncode == 0, _show(r) + "\nconsole:\n" + vm.console()
    print("session + PREPARING %.0f s" % (time.time() - started))
    out = json.loads(r.stdout)
    out["manifest"], out["marks"] = m, marks
    # nothing syncs the guest's page cache after a non-final pass: let its writeback
    # (30 s expiry) and ext4's 5 s journal commits put the files on the virtual disk
    time.sleep(WRITEBACK_WAIT)
    return out


@pytest.fixture(scope="module")
def system_raw(vm, prepared, tmp_path_factory):
    """The system target's disk file as the VM left it, as a raw file here."""
    disks = {d["name"]: d["file"] for d in vm.cloud._get("instances", vm.instance_id)["disks"]}
    raw = os.path.join(str(tmp_path_factory.mktemp("vm-disks-raw")), "system.raw")
    runner.run(["qemu-img", "convert", "-U", "-O", "raw", disks["go2aliyun-target-system"],
                raw], timeout=600)
    try:
        yield raw
    finally:
        for path in (raw, raw + ".root-lv"):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.timeout(1800)
def test_receiver_in_the_vm_prepares_gpt_esp_and_lvm_root(vm, prepared, system_raw):
    m, doc = prepared["manifest"], prepared["doc"]
    src_disk = m["disks"][0]
    esp_src = next(f for f in m["filesystems"] if f["mountpoint"] == "/boot/efi")
    root_src = next(f for f in m["filesystems"] if f["mountpoint"] == "/")
    work_vg = "g2a-" + vm.vg_name

    # the status API: what was made and where it is mounted
    review = doc["plan_review"]
    assert "LVM PV of %s (made as %s)" % (vm.vg_name, work_vg) in review, review
    mounts = review.split("mounts:\n", 1)[1].splitlines()
    assert mounts[0].split() == ["system:/", "(ext4", root_src["uuid"] + ")"], review
    assert mounts[1].split() == ["system:/boot/efi", "(vfat", esp_src["uuid"] + ")"], review
    assert "id change" not in review, review
    assert set(doc["modules"]) == {"system"}, doc["modules"]
    assert doc["modules"]["system"]["path"].endswith("/system"), doc["modules"]
    assert doc["state"] == "READY_FOR_DATA", doc

    with loopdev.attached(system_raw, read_only=True) as dev:
        table = parsers.parse_sfdisk_json(runner.run(["sfdisk", "--json", dev]).stdout)
        assert table["table"] == "gpt" and table["table_id"] == src_disk["table_id"]
        p1, p2 = table["partitions"]
        assert (p1["type"].upper(), p1["size_bytes"]) == (
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", ESP_SIZE)
        assert p1["partuuid"].upper() == src_disk["partitions"][0]["partuuid"]
        assert p2["type"].upper() == "E6D6D379-F507-44C2-A23C-238F2A3DF928"
        assert p2["size_bytes"] > 15 * GiB  # scaled up to the 20 GiB target

        esp = {}
        for line in runner.run(["blkid", "-p", "-o", "export",
                                loopdev.partition(dev, 1)]).stdout.splitlines():
            k, _, v = line.partition("=")
            esp[k] = v
        assert (esp["TYPE"], esp["UUID"], esp.get("LABEL")) == ("vfat", esp_src["uuid"],
                                                                "ESP"), esp

        pv = loopdev.partition(dev, 2)
        pvs = _lvm_report(["pvs"], pv, "pv_name,vg_name,pe_start")
        assert [x["vg_name"] for x in pvs] == [work_vg], pvs
        vgs = _lvm_report(["vgs"], pv, "vg_name,vg_extent_size")
        assert vgs == [{"vg_name": work_vg, "vg_extent_size": str(4 * MiB)}], vgs
        lvs = _lvm_report(["lvs"], pv, "lv_name,lv_size,seg_start_pe,seg_pe_ranges")
        assert sorted(x["lv_name"] for x in lvs) == ["root", "swap_1"], lvs
        root_lv = next(x for x in lvs if x["lv_name"] == "root")
        first_pe = int(root_lv["seg_pe_ranges"].rsplit(":", 1)[1].split("-")[0])
        offset = (p2["start_bytes"] + int(pvs[0]["pe_start"]) + first_pe * 4 * MiB)

    lv = extract(system_raw, offset, int(root_lv["lv_size"]), system_raw + ".root-lv")
    text = runner.run(["dumpe2fs", "-h", lv]).stdout
    info = parsers.parse_dumpe2fs(text)
    assert info["uuid"] == root_src["uuid"]  # no collision with the receiver's own ids
    assert set(L.EXT4_DEBIAN12) - {"needs_recovery"} <= set(info["features"])
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assert int(fields["Mount count"]) >= 1, text  # the receiver mounted it

    # the pushed files landed on the right filesystems: the LV's ext4 (its journal
    # replayed on this throwaway copy first) and the ESP's vfat (read with mtools)
    runner.run(["e2fsck", "-fy", lv], ok_codes=(0, 1))
    marks = prepared["marks"]
    got = runner.run(["debugfs", "-R", "cat /" + PUSHED[0], lv]).stdout
    assert got == marks[PUSHED[0]]
    got = runner.run(["mtype", "-i", "%s@@%d" % (system_raw, p1["start_bytes"]),
                      "::/EFI/g2a/hello.txt"], env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    assert got.replace("\r\n", "\n") == marks[PUSHED[1]]
    # ... and not on the other one: /boot/efi on the root fs is only the mount point
    r = runner.run(["debugfs", "-R", "ls -l /boot/efi", lv])
    assert "EFI" not in r.stdout, r.stdout
