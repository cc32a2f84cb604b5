"""Issue 5 (3) and (4) in one cycle: a Debian 12 server with an LVM root, booting with
UEFI from a GPT disk with an ESP, plus a data disk at /mnt/disk1, migrated through the
receiver running INSIDE the appliance VM (this host's kernel has neither vfat nor
device-mapper; the appliance's Debian kernel under qemu TCG has both), converted there
and booted from the image set under OVMF to a login prompt. It keeps issue 4's evidence
(the disks prepared in the VM, the VG made under its working name).

1. The source: a real Debian 12 tree (tests/helpers/uefi_lvm_source.py: debootstrap with
   grub-efi-amd64 and lvm2, fstab with / and swap on LVs, the ESP by UUID=, the data
   disk as /dev/sdb1, RESUME= on the swap LV, GRUB's EFI image on the ESP) and its
   manifest (the tree's inventory on a GPT + ESP + LVM PV layout, firmware uefi).
2. The appliance is started the way an operator starts it from the ECS console
   (issue 15): the local provider boots it with NO user-data (no NoCloud seed) and two
   blank disks (tests/helpers/appliance_vm.console_launched, qemu in ``ecs``); the
   receiver starts by itself, makes a one-time token and prints address, token and
   fingerprint on the serial console, where the test reads the token. One more disk is
   hot-plugged into the running VM over QMP (tests/helpers/qmp.py): a raw file holding
   a PV and a volume group of the source's VG name (made on the host with
   pvcreate/vgcreate, no device-mapper needed): not blank, so the receiver must not
   take it as a target, and must make ours as ``g2a-<name>`` and rename it back at
   release.
3. In ``src``, as ``go2aliyun migrate --receiver ADDR`` with ``GO2ALIYUN_TOKEN`` only
   does: the receiver proves it knows the token (no fingerprint is given), a session,
   the manifest and plan, PREPARING (the two blank disks matched to system and disk1
   by size), one pass of the whole tree and the
   data disk through the real TLS data channel (source_script.push), then the final
   pass; the receiver converts in the VM (grub-install x86_64-efi, the fallback
   EFI/BOOT/BOOTX64.EFI, update-initramfs, update-grub), renames the VG back,
   unmounts, syncs and hands the disks to the host (``image.by == "host"``).
4. On the host, ``go2aliyun-cloud --provider local finish --boot-mode UEFI`` (its
   cloud_state.json written as for an instance started by hand) writes the
   image set and boots it under OVMF: login prompt, no emergency shell; the image is
   read back: GPT and ESP ids, the VG under the SOURCE's name, the root LV's ext4
   (its UUID, features, fstab, grub.cfg, the pushed file), the ESP (the fallback
   loader, the pushed file: mtools) and the data disk.

The fixture deletes the instance (stops qemu), the namespaces and the loop devices,
even on failure.
"""

import json
import os
import re
import sys
import time
import uuid

import pytest

from image_build.cloud.local import IMAGE_FILE, VERIFY_CONSOLE
from image_build.dev import appliance
from image_build.state import StateFile as CloudState
from receiver import blockdev
from tests.helpers import appliance_vm, qmp
from tests.helpers import uefi_lvm_source as S
from tests.helpers.appliance_vm import chroot_command_times
from tests.helpers.e2e import mounted_image
from tests.receiver.disks import layouts as L
from wire import parsers, runner

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.long(minutes=13)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB, GiB = 1 << 20, 1 << 30
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
SYSTEM_GIB, DATA_GIB = 20, 20  # the smallest sizes ECS (and user_config) allow
IMAGE_NAME = "g2a-vm-uefi-lvm"
HELD_DISK_MIB = 64
# the guest kernel's line for the hot-plugged disk: "virtio_blk virtio4: [vdd] 131072
# 512-byte logical blocks (67.1 MB/64.0 MiB)"
HELD_DISK_SEEN = "] %d 512-byte logical blocks" % (HELD_DISK_MIB * 2048)
CONFIG = {"access_id": "", "secret_key": "", "region_id": "", "image_name": IMAGE_NAME,
          "system_disk_size": SYSTEM_GIB, "platform": "Debian", "architecture": "x86_64",
          "bandwidth_limit": 0,
          "data_disks": [{"data_disk_index": 1, "data_disk_size": DATA_GIB,
                          "src_path": "/mnt/disk1"}]}
GUEST_STATE = "/var/lib/go2aliyun"

# Runs in `src`, as `go2aliyun migrate --sync-only` then `--cutover` do: a session,
# the manifest and plan, PREPARING, a pass of the whole tree and the data disk through
# the real TLS data channel, the final pass, then the receiver's work until the image
# is ready (the local provider: disks handed to the host). Phase times on stdout.
MIGRATE = r"""
import json, os, sys, tempfile, time
from source_script import push, session, tlsbridge
address, fingerprint, request, tree, data = sys.argv[1:6]
token = os.environ["GO2ALIYUN_TOKEN"]  # never in argv
with open(request) as f:
    req = json.load(f)
times = {}
began = time.time()
sdir = tempfile.mkdtemp()
client, answer = session.open_session(address, fingerprint or None, token, sdir)
fingerprint = client.fingerprint  # proven by the receiver: the pin from now on
client.put_manifest(req["manifest"], req["plan"])
client.prepare()
ready = session.wait_for(client, lambda d: d.get("state") == "READY_FOR_DATA",
                         timeout=900, interval=2)
times["session_and_preparing"] = time.time() - began
bridge = tlsbridge.bridge_env(answer["data_port"], fingerprint,
                              os.path.join(sdir, session.CERT_FILE),
                              os.path.join(sdir, session.KEY_FILE))
pushed = []
for final in (False, True):
    began = time.time()
    sync = client.start_sync(final)
    modules = sync.get("modules") or answer["modules"]
    stats = {}
    for disk, source in (("system", tree), ("disk1", data)):
        st = push.push_disk(disk, source, address, modules[disk]["module"], bridge,
                            workdir=sdir)
        stats[disk] = {"bytes": st.get("total_size", 0), "files": st.get("files", 0)}
    client.finish_sync(sync["pass"], stats)
    pushed.append(stats)
    times["final_pass" if final else "first_pass"] = time.time() - began
began = time.time()
done = session.wait_for(client, lambda d: d.get("state") in ("IMAGE_READY", "RELEASED"),
                        timeout=2700, interval=5)
times["conversion"] = time.time() - began
print(json.dumps({"ready": ready, "done": done, "pushed": pushed, "times": times,
                  "migration_id": answer["migration_id"], "fingerprint": fingerprint}))
"""


def make_held_vg(path, vg_name):
    """A raw disk file holding one PV and VG ``vg_name`` (with an LV, never activated),
    made on a loop device here; every LVM command limited to that device."""
    with open(path, "wb") as f:
        f.truncate(HELD_DISK_MIB * MiB)
    with blockdev.attached(path, partitions=()) as dev:
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


def debugfs_cat(image, path):
    return runner.run(["debugfs", "-R", "cat " + path, image]).stdout


@pytest.fixture(scope="module")
def appliance_image():
    return appliance.build(progress=lambda m: print("build-image:", m))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The UEFI + LVM source tree and its manifest (VG of a random name)."""
    started = time.time()
    src = S.build(str(tmp_path_factory.mktemp("uefi-lvm-source")),
                  "g2avm%s" % uuid.uuid4().hex[:6])
    print("source tree %.0f s" % (time.time() - started))
    return src


@pytest.fixture(scope="module")
def vm(tmp_path_factory, appliance_image, source):
    """The appliance started as from the ECS console (no user-data) with two blank
    disks, its token read from the serial console; one more disk with the held VG
    hot-plugged. Whatever happens, our qemu stops, the namespaces go."""
    base = str(tmp_path_factory.mktemp("vm-uefi-lvm"))
    held = os.path.join(base, "held-vg.raw")
    make_held_vg(held, source.vg)
    started = time.time()
    with appliance_vm.console_launched(base, CONFIG, appliance_image,
                                       [SYSTEM_GIB, DATA_GIB]) as r:
        print("boot to the token on the console %.0f s" % (time.time() - started))
        r.base = base
        r.qmp_sock = r.qmp_socket()
        r.held_serial = qmp.hotplug_disk(r.qmp_sock, held, "g2a-held-vg")
        r.appliance_disk = r.cloud._get("instances", r.instance_id)["disks"][0]["file"]
        yield r


def guest_files(vm, *paths):
    """Files of the receiver's state folder, read from the running VM's disk."""
    out = {}
    with mounted_image(vm.appliance_disk, 1, in_use=True) as mnt:
        for path in paths:
            full = os.path.join(mnt, GUEST_STATE.lstrip("/"), path)
            if os.path.exists(full):
                with open(full, errors="replace") as f:
                    out[path] = f.read()
    return out


@pytest.fixture(scope="module")
def migrated(vm, source):
    """The receiver prepared the layout, took both passes, converted and handed the
    disks over; its status document and phase times."""
    assert vm.held_serial in qmp.devices(vm.qmp_sock)
    # the guest's kernel names the hot-plugged disk on the console (ACPI hotplug under
    # TCG takes a few seconds); the receiver's `vgs` at PREPARING then finds its VG
    deadline = time.time() + 180
    while HELD_DISK_SEEN not in vm.cloud.console(vm.instance_id):
        assert time.time() < deadline, "the guest did not take the hot-plugged disk " \
            "in:\n" + vm.console()
        time.sleep(2)
    time.sleep(3)
    plan = L.plan(data_disks=[(1, "/mnt/disk1")])
    plan.update(image_name=IMAGE_NAME, system_disk_size=SYSTEM_GIB,
                filters={"system": [], "disk1": []})
    plan["data_disks"][0]["size_gib"] = DATA_GIB
    request = os.path.join(vm.base, "request.json")
    with open(request, "w") as f:
        json.dump({"manifest": source.manifest, "plan": plan}, f)
    # the operator copied the token only (the console shows the fingerprint too)
    r = vm.net.run(vm.net.src, [sys.executable, "-c", MIGRATE, vm.launched["address"],
                                "", request, source.tree, source.data],
                   ok_codes=None, timeout=3600, cwd=REPO,
                   env={"PYTHONPATH": REPO, "GO2ALIYUN_TOKEN": vm.launched["token"]})
    if r.returncode != 0:
        log = guest_files(vm, "logs/worker.log").get("logs/worker.log", "")
        pytest.fail(appliance_vm.show(r) + "\nworker.log:\n" + log[-6000:] +
                    "\nconsole:\n" + vm.console())
    out = json.loads(r.stdout)
    out["guest"] = guest_files(vm, "migration.json", "prepare.json", "convert.json",
                               "target-disks.json", "status.json", "logs/worker.log")
    for phase in ("session_and_preparing", "first_pass", "final_pass", "conversion"):
        print("%s %.0f s" % (phase, out["times"][phase]))
    return out


@pytest.fixture(scope="module")
def finished(vm, migrated):
    """``go2aliyun-cloud --provider local finish --boot-mode UEFI`` on the host: the
    image set, booted under OVMF. Returns (image folder, its description). Started by
    hand, the instance has no launch record: the operator's cloud_state.json names it
    and the migration."""
    state = CloudState.in_workdir(vm.work)
    state.update(instance_id=vm.instance_id, migration_id=migrated["migration_id"],
                 image_name=IMAGE_NAME)
    started = time.time()
    r = vm.cli("finish", "--boot-mode", "UEFI", timeout=2400)
    print("finish %.0f s" % (time.time() - started))
    image = os.path.join(vm.local_dir, "images", IMAGE_NAME)
    assert r.returncode == 0, appliance_vm.show(r)
    with open(os.path.join(image, IMAGE_FILE)) as f:
        return image, json.load(f)


@pytest.fixture(scope="module")
def image_raw(finished, tmp_path_factory):
    """The image set's disks as raw files here: {module: path}."""
    image, desc = finished
    work = str(tmp_path_factory.mktemp("vm-uefi-lvm-raw"))
    out = {}
    try:
        for d in desc["disks"]:
            out[d["module"]] = os.path.join(work, d["module"] + ".raw")
            runner.run(["qemu-img", "convert", "-O", "raw", os.path.join(image, d["file"]),
                        out[d["module"]]], timeout=600)
        yield out
    finally:
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))


@pytest.mark.timeout(3600)
def test_uefi_lvm_server_migrated_in_the_vm_boots_under_ovmf(vm, source, migrated,
                                                             finished, image_raw):
    m, vg = source.manifest, source.vg
    work_vg = "g2a-" + vg
    src_disk = m["disks"][0]
    esp_src = next(f for f in m["filesystems"] if f["mountpoint"] == "/boot/efi")
    root_src = next(f for f in m["filesystems"] if f["mountpoint"] == "/")

    # started with no user-data: the receiver printed the token (read by the test) and
    # its fingerprint on the serial console, which is the certificate it proved the
    # token with; it took the two blank disks by size, in device order, and not the
    # hot-plugged one that holds a volume group
    guest = migrated["guest"]
    assert migrated["fingerprint"] == vm.launched["console_fingerprint"].replace(
        ":", "").lower(), (migrated["fingerprint"], vm.launched)
    assert vm.launched["blank_disks"] == "/dev/vdb (%.1f GiB), /dev/vdc (%.1f GiB)" % (
        SYSTEM_GIB, DATA_GIB), vm.launched
    assert json.loads(guest["target-disks.json"]) == {
        "disks": {"system": "/dev/vdb", "disk1": "/dev/vdc"}, "force_wipe": []}
    assert re.search(r"not a target disk: /dev/vdd: not blank: holds a LVM2_member "
                     r"signature", guest["logs/worker.log"]), guest["logs/worker.log"][-3000:]
    assert json.loads(guest["status.json"])["token"] == vm.launched["token"]

    # PREPARING in the VM (the status API): what was made and where it is mounted
    doc = migrated["ready"]
    review = doc["plan_review"]
    assert "LVM PV of %s (made as %s)" % (vg, work_vg) in review, review
    mounts = review.split("mounts:\n", 1)[1].splitlines()
    assert mounts[0].split() == ["system:/", "(ext4", root_src["uuid"] + ")"], review
    assert mounts[1].split() == ["system:/boot/efi", "(vfat", esp_src["uuid"] + ")"], review
    assert "id change" not in review, review
    assert set(doc["modules"]) == {"system", "disk1"}, doc["modules"]
    assert doc["modules"]["system"]["path"].endswith("/system"), doc["modules"]
    assert doc["state"] == "READY_FOR_DATA", doc
    # the whole tree went through the data channel, then a final pass of (nearly) nothing
    first, final = migrated["pushed"]
    assert first["system"]["files"] > 10000 and first["disk1"]["files"] >= 1, first

    # CONVERTING in the VM, the VG renamed back, the disks handed to the host
    done = migrated["done"]
    assert done["state"] in ("IMAGE_READY", "RELEASED"), done
    assert done["image"]["by"] == "host" and len(done["image"]["disks"]) == 2, done["image"]
    guest = migrated["guest"]
    prepared = json.loads(guest["prepare.json"])
    assert [(v["name"], v["create_name"]) for v in prepared["layout"]["vgs"]] == [
        (vg, work_vg)]
    log = guest["logs/worker.log"]
    assert re.search(r"run: vgrename --devices \S+ .* %s %s$" % (work_vg, vg), log, re.M), \
        log[-3000:]
    times = chroot_command_times(log)
    print("conversion commands in the guest (s):", times)
    assert [name for name, _ in times] == ["grub-install", "mkdir", "cp", "update-initramfs",
                                           "update-grub"], times
    report = json.loads(guest["convert.json"])
    assert report["firmware"] == "uefi" and report["commands"][0][:2] == [
        "grub-install", "--target=x86_64-efi"], report["commands"]

    # finish: the image set booted under OVMF to a login prompt, no emergency shell
    # (the console is `quiet`: a required mount that failed, /boot/efi or the data
    # disk, would have ended in emergency mode instead)
    image, desc = finished
    assert desc["boot_mode"] == "UEFI", desc
    assert [(d["module"], d["device"]) for d in desc["disks"]] == [
        ("system", "/dev/xvda"), ("disk1", "/dev/xvdb")]
    assert desc["verification"]["ok"] is True, desc["verification"]
    with open(os.path.join(image, VERIFY_CONSOLE), errors="replace") as f:
        console = f.read()
    assert "Debian GNU/Linux 12 %s ttyS0" % S.HOSTNAME in console, console[-3000:]
    assert console.rstrip().endswith("login:"), console[-3000:]
    assert "emergency" not in console.lower(), console[-3000:]

    # the image's system disk: GPT and the ESP as the source had them, the PV scaled up
    system_raw = image_raw["system"]
    with blockdev.attached(system_raw, read_only=True) as dev:
        table = parsers.parse_sfdisk_json(runner.run(["sfdisk", "--json", dev]).stdout)
        assert table["table"] == "gpt" and table["table_id"] == src_disk["table_id"]
        p1, p2 = table["partitions"]
        assert (p1["type"].upper(), p1["size_bytes"]) == (S.ESP_TYPE, S.ESP_SIZE)
        assert p1["partuuid"].upper() == src_disk["partitions"][0]["partuuid"]
        assert p2["type"].upper() == S.LVM_TYPE
        assert p2["size_bytes"] > 15 * GiB  # scaled up to the 20 GiB target

        esp = {}
        for line in runner.run(["blkid", "-p", "-o", "export",
                                blockdev.partition(dev, 1)]).stdout.splitlines():
            k, _, v = line.partition("=")
            esp[k] = v
        assert (esp["TYPE"], esp["UUID"]) == ("vfat", esp_src["uuid"]), esp

        # the VG under the source's name again (release renamed it back)
        pv = blockdev.partition(dev, 2)
        pvs = _lvm_report(["pvs"], pv, "pv_name,vg_name,pe_start")
        assert [x["vg_name"] for x in pvs] == [vg], pvs
        vgs = _lvm_report(["vgs"], pv, "vg_name,vg_extent_size")
        assert vgs == [{"vg_name": vg, "vg_extent_size": str(4 * MiB)}], vgs
        lvs = _lvm_report(["lvs"], pv, "lv_name,lv_size,seg_start_pe,seg_pe_ranges")
        assert sorted(x["lv_name"] for x in lvs) == ["root", "swap_1"], lvs
        root_lv = next(x for x in lvs if x["lv_name"] == "root")
        first_pe = int(root_lv["seg_pe_ranges"].rsplit(":", 1)[1].split("-")[0])
        offset = (p2["start_bytes"] + int(pvs[0]["pe_start"]) + first_pe * 4 * MiB)

    # the root LV's ext4: the source's UUID and features, mounted by the receiver
    lv = extract(system_raw, offset, int(root_lv["lv_size"]), system_raw + ".root-lv")
    text = runner.run(["dumpe2fs", "-h", lv]).stdout
    info = parsers.parse_dumpe2fs(text)
    assert info["uuid"] == root_src["uuid"]  # no collision with the receiver's own ids
    assert set(L.EXT4_DEBIAN12) - {"needs_recovery"} <= set(info["features"])
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assert int(fields["Mount count"]) >= 1, text
    assert "needs_recovery" not in info["features"], info  # unmounted cleanly
    runner.run(["e2fsck", "-fn", lv])  # consistent as the receiver left it

    # fstab: / and swap by their LV paths, the ESP and the data disk by UUID=
    fstab = [ln.split() for ln in debugfs_cat(lv, "/etc/fstab").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    by_mp = {e[1]: e for e in fstab}
    assert by_mp["/"][0] == S.dm_path(vg, "root"), fstab
    assert by_mp["/boot/efi"][:3] == ["UUID=" + esp_src["uuid"], "/boot/efi", "vfat"], fstab
    assert by_mp["/mnt/disk1"][:3] == ["UUID=" + source.data_uuid, "/mnt/disk1", "ext4"], \
        fstab
    assert "nofail" not in by_mp["/mnt/disk1"][3], fstab
    assert [e[0] for e in fstab if e[2] == "swap"] == [S.dm_path(vg, "swap_1")], fstab
    # grub.cfg boots the root LV by its source name (update-grub ran while the VG had
    # its working name), on the serial console
    grub_cfg = debugfs_cat(lv, "/boot/grub/grub.cfg")
    kernel_lines = [ln for ln in grub_cfg.splitlines() if ln.strip().startswith("linux")]
    assert kernel_lines, grub_cfg
    for ln in kernel_lines:
        assert "root=%s " % S.dm_path(vg, "root") in ln and "console=ttyS0" in ln, ln
    assert work_vg not in grub_cfg and work_vg.replace("-", "--") not in grub_cfg
    # the pushed files, each on its own filesystem
    marks = source.marks
    assert debugfs_cat(lv, "/" + S.MARKS[0]) == marks[S.MARKS[0]]
    r = runner.run(["debugfs", "-R", "ls -l /boot/efi", lv])
    assert "EFI" not in r.stdout, r.stdout  # /boot/efi on the root fs is a mount point

    # the ESP: the fallback loader ECS boots (no NVRAM entries), GRUB and the pushed file
    esp_img = "%s@@%d" % (system_raw, p1["start_bytes"])
    listing = runner.run(["mdir", "-/", "-b", "-i", esp_img, "::/EFI"],
                         env=MTOOLS_ENV).stdout.upper().split()
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing, listing  # vfat: names without case
    assert "::/EFI/DEBIAN/GRUBX64.EFI" in listing, listing
    got = runner.run(["mtype", "-i", esp_img, "::/" + S.MARKS[1][len("boot/efi/"):]],
                     env=MTOOLS_ENV).stdout
    assert got.replace("\r\n", "\n") == marks[S.MARKS[1]]

    # the data disk, its file on its ext4
    with blockdev.attached(image_raw["disk1"], read_only=True) as dev:
        part = blockdev.partition(dev, 1)
        assert runner.run(["blkid", "-p", "-s", "UUID", "-o", "value", part]).stdout.strip() \
            == source.data_uuid
        assert debugfs_cat(part, "/" + S.DATA_MARK) == marks[S.DATA_MARK]
