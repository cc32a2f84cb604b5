"""The demo: migrate a real Debian 12 server on this machine and boot the image.

    python3 -m image_build.dev.demo [--work DIR] [--keep] [--cloud local|fake-aliyun]

Every step is real: the sample server (Debian 12 made with debootstrap onto loop disk
images: MBR with /boot, / and swap, fstab by /dev/sda names, a data disk at
/mnt/disk1) is mounted read-only in a network namespace ``src``; the intermediate
instance lives in a namespace ``ecs``. Two modes (``--cloud``):

* ``local`` (the default): the ``local`` provider, whose instances are qemu VMs.
  ``go2aliyun-cloud --provider local launch`` (run in ``src``) boots the receiver
  appliance (image_build/dev/appliance.py: Debian 12 with go2aliyun-receiver, built once
  and cached) under qemu in ``ecs`` with an empty virtio disk per source disk, its
  ports 8080 and 8703 forwarded on the ``ecs`` address; ``go2aliyun migrate
  --sync-only`` and ``--cutover`` push the server through TLS; the receiver inside
  the VM rebuilds the disks and converts the copy (update-initramfs, GRUB) and hands
  the disks over; ``go2aliyun-cloud finish`` snapshots them, writes the image set
  (qcow2 files), boots it under qemu to a login prompt with the data disk mounted
  (VERIFYING) and releases the instance; ``cleanup`` drops the rest. The demo prints
  the image folder and the boot's result.
* ``fake-aliyun``: the Alibaba Cloud way, against the fake Alibaba Cloud API of the
  tests (tests/fakecloud, started by the demo on 127.0.0.1 and reached from ``src``
  and ``ecs`` through forwarded ports). ``go2aliyun-cloud --provider aliyun launch``
  (the real Alibaba Cloud SDK) makes the VPC, vSwitch, security group and
  INSTANCE_FOR_GOTOALIYUN; the fake "boots" the instance by applying its user-data and
  starting a real receiver in ``ecs`` (its target disks are the two loop disks); then,
  as the README says, ``go2aliyun migrate --sync-only`` and ``--cutover`` run on the
  server (``src``, no AccessKey there); the receiver converts, proves the copy boots
  under qemu, snapshots the disks and creates the custom image with its RAM role; then
  ``go2aliyun-cloud cleanup`` releases the instance and the network. The demo prints
  the image id, the verification boot's result and what is left in the fake cloud
  (only the image and its snapshots). Needs a checkout of the repository (tests/).

A second run reuses the cached sample server and appliance and finishes faster.

Needs root, the Debian packages of image_build/setup.sh and the project installed
(``bash image_build/dev/demo.sh`` does both, then runs this).
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time

from image_build.cloud.local import IMAGE_FILE, VERIFY_CONSOLE, LocalCloud
from image_build.cloud.local import STATE_FILE as LOCAL_STATE
from image_build.dev import appliance, sample_server
from image_build.dev.netns import netns_pair
from receiver import blockdev
from tests.fakecloud.instances import fake_aliyun
from tests.fakecloud.server import OPERATOR_KEY
from wire import runner

GIB = 1024 ** 3
IMAGE_NAME = "GO2ALIYUN_DEMO"


def stage(n, total, text):
    print("\n[%d/%d] %s" % (n, total, text), flush=True)


def demo_config(image_name=IMAGE_NAME):
    """The user_config.json of the demo (the seed's fields)."""
    return {"access_id": "", "secret_key": "", "region_id": "", "image_name": image_name,
            "system_disk_size": 20, "platform": "Debian", "architecture": "x86_64",
            "bandwidth_limit": 0,
            "data_disks": [{"data_disk_index": 1, "data_disk_size": 20,
                            "src_path": "/mnt/disk1"}]}


def begin(work, total, cloud_config):
    """Stage 1 of both modes: the sample server (built once, then cached), the run's
    folders, the server's work folder with its user_config.json (never an AccessKey:
    the server does not need one) and the operator's folder for go2aliyun-cloud with
    ``cloud_config`` (0600). Returns (migration folder, server work folder, operator
    folder)."""
    os.makedirs(work, exist_ok=True)
    stage(1, total, "sample source server: Debian 12 on loop disks (cached after the first run)")
    sample_dir = sample_server.default_out_dir()
    desc = sample_server.build(sample_dir)
    print("    %s (kernel %s)" % (sample_dir, desc["kernel"]))
    migration = os.path.join(work, "run-%d" % int(time.time()))
    cloud_work = os.path.join(migration, "cloud-work")
    workdir = os.path.join(migration, "source-work")
    for folder in (cloud_work, workdir):
        os.makedirs(folder)
    with open(os.path.join(workdir, "user_config.json"), "w") as f:
        json.dump(demo_config(), f, indent=2)
    fd = os.open(os.path.join(cloud_work, "user_config.json"),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cloud_config, f, indent=2)
    return migration, workdir, cloud_work


def hosts(stack, n, total, ecs_role):
    """Stage ``n`` of both modes: the namespaces ``src`` and ``ecs`` and the sample
    server mounted read-only (both undone by ``stack``). Returns (net, root)."""
    stage(n, total, "two hosts: network namespaces src (the server) and ecs (%s)" % ecs_role)
    net = stack.enter_context(netns_pair())
    print("    src %s (ip netns exec %s)  <->  ecs %s (ip netns exec %s)"
          % (net.src_ip, net.src, net.ecs_ip, net.ecs))
    root = stack.enter_context(sample_server.mounted_readonly(sample_server.default_out_dir()))
    print("    the server's filesystems, read-only, at %s" % root)
    return net, root


def run(work, keep=False, cloud="local"):
    """The demo; returns its exit code (see :func:`run_demo` for the result)."""
    return run_demo(work, keep=keep, cloud=cloud)["rc"]


def run_demo(work, keep=False, cloud="local", observe=None):
    """The demo in mode ``cloud``; returns a dict with ``rc`` (0: done and verified) and
    what was made (see :func:`run_local` and :func:`run_fake_aliyun`)."""
    if cloud == "fake-aliyun":
        return run_fake_aliyun(work, keep=keep)
    return run_local(work, keep=keep, observe=observe)


def remove_target_files(migration):
    for name in os.listdir(migration):
        if name.startswith("target-"):
            os.unlink(os.path.join(migration, name))


def _run_in(net, ns, argv, env=None, capture=False):
    """``python3 -m argv...`` (a go2aliyun command) in namespace ``ns`` (the host's
    when ``ns`` is None); its output goes to the terminal, or with ``capture`` (True or
    "stdout") is returned. Returns (exit code, stdout)."""
    full = [sys.executable, "-m"] + argv
    r = runner.run(net.argv(ns, full) if ns else full, env=env, ok_codes=None,
                   capture=capture)
    if capture is True and r.returncode != 0:
        print(r.stderr[-3000:])
    return r.returncode, r.stdout


def migrate_sync_then_cutover(net, workdir, root, launched):
    """``go2aliyun migrate --sync-only`` (spends the token, given in GO2ALIYUN_TOKEN,
    never in argv), then ``--cutover``, on the server (namespace ``src``) against the
    receiver ``launched`` names; returns the exit code of the last one run."""
    migrate = ["source_script.cli", "migrate", "--workdir", workdir, "--root", root, "--yes"]
    rc, _ = _run_in(net, net.src, migrate + [
        "--receiver", launched["address"], "--fingerprint", launched["fingerprint"],
        "--sync-only"], env={"GO2ALIYUN_TOKEN": launched["token"]})
    if rc == 0:
        rc, _ = _run_in(net, net.src, migrate + ["--cutover"])
    return rc


# ------------------------------------------------------------------ local mode

def release_local_instances(local_dir):
    """Stop and delete every instance of the local provider in ``local_dir`` (its qemu
    never outlives the demo, whatever happens)."""
    if not os.path.isfile(os.path.join(local_dir, LOCAL_STATE)):
        return
    cloud = LocalCloud(local_dir)
    for inst_id in list(cloud._read()["instances"]):
        cloud.delete_instance(inst_id)


def run_local(work, keep=False, observe=None):
    """``--cloud local``: see the module docstring. Returns a dict: ``rc``, ``image``
    (the image set's folder), ``boot`` and ``verify`` (the verification boot),
    ``local_dir``, ``instance_id``, ``workdir`` (the server's work folder),
    ``cloud_left`` (the local cloud's state after cleanup), ``seconds``.
    ``observe(point, info)``, when given, is called at "launched" (the receiver
    answers) and "converted" (cutover done, the instance still running) with a dict
    of ``net``, ``launched``, ``local_dir``, ``instance_id``: for tests."""
    total = 7
    started = time.time()
    migration, workdir, cloud_work = begin(work, total, demo_config())
    local_dir = os.path.join(migration, "local-cloud")
    result = {"rc": 1, "image": None, "boot": False, "local_dir": local_dir,
              "workdir": workdir, "migration": migration}
    with contextlib.ExitStack() as stack:
        stage(2, total, "the receiver appliance: Debian 12 with go2aliyun-receiver as a qcow2 "
                        "image (built once, then cached)")
        image = appliance.build(progress=lambda m: print("    " + m, flush=True))
        print("    %s" % image)
        net, root = hosts(stack, 3, total, "where qemu runs the intermediate instance")
        stack.callback(release_local_instances, local_dir)
        cloud_cli = ["image_build.cli", "--workdir", cloud_work, "--provider", "local",
                     "--local-dir", local_dir, "--listen", net.ecs_ip, "--netns", net.ecs]

        stage(4, total, "go2aliyun-cloud --provider local launch (run in src): the appliance "
                        "boots under qemu (TCG) with an empty disk per source disk, its "
                        "ports 8080 and 8703 forwarded on the ecs address")
        rc, out = _run_in(net, net.src, cloud_cli + [
            "launch", "--receiver-image", image, "--source-cidr", net.src_ip, "--json"],
            capture="stdout")
        if rc != 0:
            print("\nthe launch failed (exit %d); the instance's console: %s"
                  % (rc, os.path.join(local_dir, "logs")))
            return result
        launched = json.loads(out)
        info = {"net": net, "launched": launched, "local_dir": local_dir,
                "instance_id": launched["instance_id"]}
        result["instance_id"] = launched["instance_id"]
        print("    instance %s runs the receiver at %s" % (launched["instance_id"],
                                                        launched["address"]))
        print("    fingerprint %s" % launched["fingerprint"])
        print("    token: in %s (never on a command line)"
              % os.path.join(cloud_work, "cloud_state.json"))
        if observe:
            observe("launched", info)

        stage(5, total, "go2aliyun migrate --sync-only, then --cutover (run on the server, "
                        "namespace src): at cutover the receiver converts the copy inside "
                        "the VM (update-initramfs and GRUB; about 10 min under TCG)")
        rc = migrate_sync_then_cutover(net, workdir, root, launched)
        if rc != 0:
            print("\nthe migration did not finish (exit %d); the instance's console: %s"
                  % (rc, os.path.join(local_dir, "logs")))
            result["rc"] = rc
            return result
        if observe:
            observe("converted", info)

        stage(6, total, "go2aliyun-cloud finish: snapshots of the target disks, the image "
                        "set (qcow2), its boot under qemu (virtio disks and NIC, serial "
                        "console), then the instance is released")
        rc, _ = _run_in(net, None, cloud_cli + ["finish"])
        image_dir = os.path.join(local_dir, "images", IMAGE_NAME)
        desc_path = os.path.join(image_dir, IMAGE_FILE)
        if rc != 0 or not os.path.isfile(desc_path):
            print("\nfinish failed (exit %d)" % rc)
            result["rc"] = rc or 1
            return result
        with open(desc_path) as f:
            desc = json.load(f)
        result.update(image=image_dir, verify=desc["verification"],
                      boot=desc["verification"].get("ok") is True)
        print("    image %s" % image_dir)
        for d in desc["disks"]:
            print("    %-8s %-10s %s" % (d["module"], d["device"], d["file"]))
        print("    boot: %s: %s (console: %s)" % (
            "PASS" if result["boot"] else "FAIL", desc["verification"].get("reason"),
            os.path.join(image_dir, VERIFY_CONSOLE)))

        stage(7, total, "go2aliyun-cloud cleanup: the network launch recorded")
        rc, _ = _run_in(net, None, cloud_cli + ["cleanup", "--yes"])
        result["cloud_left"] = LocalCloud(local_dir)._read()
        result["released"] = rc == 0
    if not keep:
        shutil.rmtree(os.path.join(local_dir, "snapshots"), ignore_errors=True)
    result["seconds"] = int(time.time() - started)
    print("\ndemo done in %d s: image %s, boot %s" % (
        result["seconds"], result["image"], "passed" if result["boot"] else "FAILED"))
    result["rc"] = 0 if result["boot"] and result["released"] else 1
    return result


# ------------------------------------------------------------- fake-aliyun mode

# The kinds of resource a migration makes in the cloud and must release (the image and
# its snapshots are what it delivers and stay).
RELEASED_KINDS = ("instances", "disks", "security_groups", "vswitches", "vpcs")


def left_behind(summary):
    """The resources of the migration still in the cloud ({kind: count}, only kinds
    that are not zero); {} when everything was released."""
    return {k: summary[k] for k in RELEASED_KINDS if summary.get(k)}


def _json_file(path):
    with open(path) as f:
        return json.load(f)


def run_fake_aliyun(work, keep=False):
    """``--cloud fake-aliyun``: see the module docstring."""
    total = 7
    started = time.time()
    # the operator's folder holds the AccessKey, like `mig1` in the README
    migration, workdir, cloud_work = begin(work, total, dict(
        demo_config(), access_id=OPERATOR_KEY[0], secret_key=OPERATOR_KEY[1],
        region_id="cn-hangzhou"))
    result = {"rc": 1, "image_id": None, "boot": False}
    with contextlib.ExitStack() as stack:
        net, root = hosts(stack, 2, total, "the intermediate instance")
        stage(3, total, "the fake Alibaba Cloud API (tests/fakecloud: ECS, VPC, metadata "
                        "service) on 127.0.0.1")
        disks = stack.enter_context(blockdev.blank_disks(
            migration, {"system": 20 * GIB, "disk1": 20 * GIB}, prefix="target-"))

        def receiver_args(instance_root):
            return ["--disk", "system=" + disks["system"], "--disk", "disk1=" + disks["disk1"]]

        cloud = stack.enter_context(fake_aliyun(net, migration, receiver_args))
        print("    %s; from src and ecs at %s and %s" % (
            cloud.fake.endpoint, cloud.api.endpoint, cloud.api_ecs.endpoint))
        print("    receiver appliance image %s; the instance's two data disks are the "
              "empty 20 GiB loop disks %s and %s" % (cloud.appliance, disks["system"],
                                                    disks["disk1"]))
        cloud_cli = ["image_build.cli", "--workdir", cloud_work] + cloud.source_flags("--")

        stage(4, total, "go2aliyun-cloud --provider aliyun launch (run in src): VPC, "
                        "vSwitch, security group, INSTANCE_FOR_GOTOALIYUN")
        rc, out = _run_in(net, net.src, cloud_cli + [
            "--provider", "aliyun", "launch", "--receiver-image", cloud.appliance,
            "--source-cidr", net.src_ip, "--ram-role", cloud.fake.role, "--json"],
            capture=True)
        if cloud.instances.errors:
            print("    the instance's receiver did not start: %s" % cloud.instances.errors)
            return result
        if rc != 0:
            print("\nthe launch failed (exit %d)" % rc)
            return result
        launched = json.loads(out)
        print("    instance %s runs the receiver at %s" % (launched["instance_id"],
                                                        launched["address"]))
        print("    fingerprint %s" % launched["fingerprint"])
        print("    token: in %s (never on a command line)"
              % os.path.join(cloud_work, "cloud_state.json"))
        receiver = cloud.instances.receivers[0]

        stage(5, total, "go2aliyun migrate --sync-only, then --cutover (run on the server, "
                        "namespace src; no AccessKey there)")
        rc = migrate_sync_then_cutover(net, workdir, root, launched)
        doc = receiver.document()
        if rc != 0:
            print("\nthe migration did not finish (exit %d); receiver state %s: %s"
                  % (rc, doc.get("state"), json.dumps(doc.get("error"))))
            result["rc"] = rc
            return result
        image_id = (doc.get("image") or {}).get("id")
        result["image_id"] = image_id

        stage(6, total, "the image in the fake cloud, and the receiver's verification boot "
                        "(qemu, virtio disks and NIC)")
        image = dict(cloud.world.images.get(image_id) or {})
        result["cloud_image"] = image
        print("    image %s %r: %s" % (image_id, image.get("ImageName"), image.get("Status")))
        for m in (image.get("DiskDeviceMappings") or {}).get("DiskDeviceMapping", []):
            print("    %-10s %s GiB  snapshot %s" % (m["Device"], m["Size"], m["SnapshotId"]))
        verify = _json_file(os.path.join(receiver.state, "verify.json"))
        result["boot"] = verify.get("ok") is True
        result["verify"] = verify
        print("    verification boot: %s: %s (console: %s)" % (
            "PASS" if result["boot"] else "FAIL", verify.get("reason"),
            os.path.join(receiver.state, "verify", "console.log")))

        stage(7, total, "go2aliyun-cloud cleanup: release the instance and the network "
                        "launch made")
        rc, _ = _run_in(net, net.src, cloud_cli + ["cleanup", "--yes"])
        left = cloud.left()
        result["cloud_left"] = left
        result["released"] = rc == 0 and not left_behind(left)
        if result["released"]:
            print("    nothing left in the fake cloud of this migration (0 %s); kept: "
                  "the image and its %d snapshots" % (", 0 ".join(
                      k.replace("_", " ") for k in RELEASED_KINDS), left["snapshots"]))
        else:
            print("    left in the fake cloud (exit %d): %s" % (rc, left_behind(left)))
        result["seconds"] = int(time.time() - started)
    if not keep:
        remove_target_files(migration)
    ok = bool(image_id and result["cloud_image"].get("Status") == "Available"
              and result["boot"] and result["released"])
    print("\ndemo done in %d s: image %s (%s), verification boot %s, %s" % (
        result["seconds"], image_id, result["cloud_image"].get("Status"),
        "passed" if result["boot"] else "FAILED",
        "everything else released" if result["released"] else "NOT all released"))
    result["rc"] = 0 if ok else 1
    return result


EPILOG = """modes (--cloud):
  local        the local provider (the default): go2aliyun-cloud --provider local
               launch boots the receiver appliance under qemu as the intermediate
               instance; go2aliyun migrate --sync-only and --cutover run in src; the
               receiver converts the copy inside the VM; go2aliyun-cloud finish
               snapshots the disks, writes the image set (qcow2) and boots it under
               qemu; cleanup releases the rest. About 15 min here (qemu without KVM)
  fake-aliyun  the Alibaba Cloud flow against the fake API server of the tests
               (tests/fakecloud, on 127.0.0.1): go2aliyun-cloud --provider aliyun launch
               (the real SDK) starts the intermediate instance, whose user-data starts a
               real receiver in namespace ecs; go2aliyun migrate --sync-only and
               --cutover run in src; the receiver converts, verifies by booting under
               qemu, snapshots and creates the custom image; go2aliyun-cloud cleanup
               releases instance and network; the demo shows that only the image and
               its snapshots are left in the fake cloud
"""


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="image_build/dev/demo.sh", description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/go2aliyun-demo",
                    help="folder for the run: receiver state, image, logs")
    ap.add_argument("--keep", action="store_true",
                    help="keep the target disk files and snapshots (GBs)")
    ap.add_argument("--cloud", choices=("local", "fake-aliyun"), default="local",
                    help="where the image is made (see below; default: local)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the demo needs root (loop devices, mounts, network namespaces)")
    for tool in ("qemu-system-x86_64", "rsync", "sfdisk", "debootstrap"):
        if not runner.which(tool):
            raise SystemExit("%s is missing: run `bash image_build/dev/demo.sh` (it installs "
                             "what is needed)" % tool)
    # a TERM (a timeout, a service manager) unwinds like Ctrl-C: qemu stopped, the
    # namespaces, mounts and loop devices removed
    signal.signal(signal.SIGTERM, _terminated)
    return run(os.path.abspath(args.work), keep=args.keep, cloud=args.cloud)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
