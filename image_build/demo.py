"""The demo: migrate a real Debian 12 server on this machine and boot the image.

    python3 -m image_build.demo [--work DIR] [--keep] [--cloud local|fake-aliyun]

Every step is real: the sample server (Debian 12 made with debootstrap onto loop disk
images: MBR with /boot, / and swap, fstab by /dev/sda names, a data disk at
/mnt/disk1) is mounted read-only in a network namespace ``src``; the receiver runs in a
namespace ``ecs`` with two empty target disks. Two modes (``--cloud``):

* ``local`` (the default): the receiver is started directly with the ``local``
  provider; ``go2aliyun migrate --cutover`` pushes the server through TLS; the receiver
  rebuilds the disks, converts the copy, boots it under qemu to prove it, and writes
  the image as qcow2 files; the demo then boots the image once more and prints the
  result.
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

A second run reuses the cached sample server and finishes faster.

Needs root, the Debian packages of image_build/setup.sh and the project installed
(``bash image_build/demo.sh`` does both, then runs this).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from image_build import loopdev, sample_server
from image_build.netns import netns_pair, stop_process
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


def start_receiver(net, state, disks, output, log_path):
    """``go2aliyun-receiver serve`` in the ``ecs`` namespace; returns (process, status)."""
    argv = [sys.executable, "-m", "receiver.cli", "serve", "--state", state,
            "--bind", net.ecs_ip, "--address", net.ecs_ip, "--no-console", "--workers", "1",
            "--provider", "local", "--output", output]
    for name, dev in sorted(disks.items()):
        argv += ["--disk", "%s=%s" % (name, dev)]
    with open(log_path, "ab") as out:
        proc = net.start(net.ecs, argv, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    status_path = os.path.join(state, "status.json")
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the receiver stopped; see %s" % log_path)
        try:
            with open(status_path) as f:
                status = json.load(f)
            if status.get("token") and status.get("fingerprint"):
                net.wait_port(net.src, net.ecs_ip, 8080, timeout=60)
                return proc, status
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit("the receiver did not come up in 120 s; see %s" % log_path)


def run(work, keep=False, cloud="local"):
    """The demo; returns its exit code (see :func:`run_demo` for the result)."""
    return run_demo(work, keep=keep, cloud=cloud)["rc"]


def run_demo(work, keep=False, cloud="local"):
    """The demo in mode ``cloud``; returns a dict with ``rc`` (0: done and verified) and
    what was made (``image``, ``boot`` and, in ``fake-aliyun`` mode, the fake cloud's
    record of the image and what is left in it)."""
    if cloud == "fake-aliyun":
        return run_fake_aliyun(work, keep=keep)
    total = 6
    os.makedirs(work, exist_ok=True)
    started = time.time()
    stage(1, total, "sample source server: Debian 12 on loop disks (cached after the first run)")
    sample_dir = sample_server.default_out_dir()
    desc = sample_server.build(sample_dir)
    print("    %s (kernel %s)" % (sample_dir, desc["kernel"]))
    migration = os.path.join(work, "run-%d" % int(started))
    os.makedirs(migration)
    workdir = os.path.join(migration, "source-work")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "user_config.json"), "w") as f:
        json.dump(demo_config(), f, indent=2)
    output = os.path.join(migration, "images")
    state = os.path.join(migration, "receiver-state")
    result = {}
    with contextlib.ExitStack() as stack:
        stage(2, total, "two hosts: network namespaces src (the server) and ecs (the receiver)")
        net = stack.enter_context(netns_pair())
        print("    src %s  <->  ecs %s" % (net.src_ip, net.ecs_ip))
        root = stack.enter_context(sample_server.mounted_readonly(sample_dir))
        print("    the server's filesystems, read-only, at %s" % root)
        stage(3, total, "receiver: go2aliyun-receiver serve with two empty 20 GiB target disks")
        disks = stack.enter_context(loopdev.blank_disks(
            migration, {"system": 20 * GIB, "disk1": 20 * GIB}, prefix="target-"))
        proc, status = start_receiver(net, state, disks, output,
                                      os.path.join(migration, "receiver.log"))
        stack.callback(stop_process, proc)
        print("    address %s  fingerprint %s" % (status["address"], status["fingerprint"]))
        print("    token: in %s (never on a command line)" % os.path.join(state, "status.json"))
        stage(4, total, "go2aliyun migrate --cutover, run on the server (namespace src)")
        argv = net.argv(net.src, [
            sys.executable, "-m", "source_script.cli", "migrate", "--workdir", workdir,
            "--root", root, "--receiver", net.ecs_ip, "--fingerprint", status["fingerprint"],
            "--cutover", "--yes"])
        env = dict(os.environ, GO2ALIYUN_TOKEN=status["token"])
        rc = subprocess.call(argv, env=env, cwd=workdir)
        with open(os.path.join(state, "migration.json")) as f:
            doc = json.load(f)
        if rc != 0:
            print("\nthe migration did not finish (exit %d); receiver state %s: %s"
                  % (rc, doc.get("state"), json.dumps(doc.get("error"))))
            return {"rc": rc}
        image = doc.get("image") or {}
        stage(5, total, "image")
        print("    %s" % image.get("path"))
        with open(os.path.join(image["path"], "image.json")) as f:
            image_desc = json.load(f)
        for d in image_desc["disks"]:
            print("    %-8s %-10s %s" % (d["module"], d["device"], d["file"]))
        stage(6, total, "boot the image under qemu (virtio disks and NIC, serial console)")
        from receiver import bootcheck

        files = [os.path.join(image["path"], d["file"]) for d in image_desc["disks"]]
        verdict = bootcheck.boot_and_watch(files, workdir=os.path.join(migration, "boot"),
                                           timeout=900)
        print("    %s: %s (console: %s)" % ("PASS" if verdict.ok else "FAIL", verdict.reason,
                                             os.path.join(migration, "boot", "console.log")))
        result = {"image": image.get("path"), "boot": verdict.ok,
                  "seconds": int(time.time() - started)}
    if not keep:
        remove_target_files(migration)
    print("\ndemo done in %d s: image %s, boot %s" % (
        result["seconds"], result["image"], "passed" if result["boot"] else "FAILED"))
    result["rc"] = 0 if result["boot"] else 1
    return result


def remove_target_files(migration):
    for name in os.listdir(migration):
        if name.startswith("target-"):
            os.unlink(os.path.join(migration, name))


# ------------------------------------------------------------- fake-aliyun mode

# The kinds of resource a migration makes in the cloud and must release (the image and
# its snapshots are what it delivers and stay).
RELEASED_KINDS = ("instances", "disks", "security_groups", "vswitches", "vpcs")


def _fake_cloud_parts():
    """tests/fakecloud and the helpers it uses (a checkout of the repository)."""
    try:
        from tests.fakecloud.instances import fake_aliyun
        from tests.fakecloud.server import OPERATOR_KEY
    except ImportError as e:
        raise SystemExit("--cloud fake-aliyun needs the repository's tests/ folder (%s): "
                         "run it from a checkout, as `bash image_build/demo.sh --cloud "
                         "fake-aliyun`" % e) from e
    return fake_aliyun, OPERATOR_KEY


def left_behind(summary):
    """The resources of the migration still in the cloud ({kind: count}, only kinds
    that are not zero); {} when everything was released."""
    return {k: summary[k] for k in RELEASED_KINDS if summary.get(k)}


def _json_file(path):
    with open(path) as f:
        return json.load(f)


def _run_in(net, ns, argv, env=None, capture=False):
    """``python3 -m argv...`` (a go2aliyun command) in namespace ``ns``; its output goes
    to the terminal, or with ``capture`` is returned. Returns (exit code, stdout)."""
    r = runner.run(net.argv(ns, [sys.executable, "-m"] + argv), env=env, ok_codes=None,
                   capture=capture)
    if capture and r.returncode != 0:
        print(r.stderr[-3000:])
    return r.returncode, r.stdout


def run_fake_aliyun(work, keep=False):
    """``--cloud fake-aliyun``: see the module docstring."""
    fake_aliyun, operator_key = _fake_cloud_parts()
    total = 7
    os.makedirs(work, exist_ok=True)
    started = time.time()
    stage(1, total, "sample source server: Debian 12 on loop disks (cached after the first run)")
    sample_dir = sample_server.default_out_dir()
    desc = sample_server.build(sample_dir)
    print("    %s (kernel %s)" % (sample_dir, desc["kernel"]))
    migration = os.path.join(work, "run-%d" % int(started))
    os.makedirs(migration)
    # the operator's folder for go2aliyun-cloud (with the AccessKey, like `mig1` in the
    # README) and the server's work folder (no AccessKey: the server never needs one)
    cloud_work = os.path.join(migration, "cloud-work")
    workdir = os.path.join(migration, "source-work")
    for folder in (cloud_work, workdir):
        os.makedirs(folder)
    with open(os.path.join(workdir, "user_config.json"), "w") as f:
        json.dump(demo_config(), f, indent=2)
    keyed = dict(demo_config(), access_id=operator_key[0], secret_key=operator_key[1],
                 region_id="cn-hangzhou")
    fd = os.open(os.path.join(cloud_work, "user_config.json"),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keyed, f, indent=2)
    result = {"rc": 1, "image_id": None, "boot": False}
    with contextlib.ExitStack() as stack:
        stage(2, total, "two hosts: network namespaces src (the server) and ecs (the "
                        "intermediate instance)")
        net = stack.enter_context(netns_pair())
        print("    src %s  <->  ecs %s" % (net.src_ip, net.ecs_ip))
        root = stack.enter_context(sample_server.mounted_readonly(sample_dir))
        print("    the server's filesystems, read-only, at %s" % root)
        stage(3, total, "the fake Alibaba Cloud API (tests/fakecloud: ECS, VPC, metadata "
                        "service) on 127.0.0.1")
        disks = stack.enter_context(loopdev.blank_disks(
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
        migrate = ["source_script.cli", "migrate", "--workdir", workdir, "--root", root,
                   "--yes"]
        rc, _ = _run_in(net, net.src, migrate + [
            "--receiver", launched["address"], "--fingerprint", launched["fingerprint"],
            "--sync-only"], env={"GO2ALIYUN_TOKEN": launched["token"]})
        if rc == 0:
            rc, _ = _run_in(net, net.src, migrate + ["--cutover"])
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
  local        the receiver runs with the local provider; the image is written as qcow2
               files, then booted once more here under qemu (the default)
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
        prog="image_build/demo.sh", description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/var/tmp/go2aliyun-demo",
                    help="folder for the run: receiver state, image, logs")
    ap.add_argument("--keep", action="store_true", help="keep the target disk files")
    ap.add_argument("--cloud", choices=("local", "fake-aliyun"), default="local",
                    help="where the image is made (see below; default: local)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the demo needs root (loop devices, mounts, network namespaces)")
    for tool in ("qemu-system-x86_64", "rsync", "sfdisk", "debootstrap"):
        if not runner.which(tool):
            raise SystemExit("%s is missing: run `bash image_build/demo.sh` (it installs "
                             "what is needed)" % tool)
    return run(os.path.abspath(args.work), keep=args.keep, cloud=args.cloud)


if __name__ == "__main__":
    sys.exit(main())
