"""The receiver's long steps on real disks, registered with the worker.

``PREPARING``   rebuild the source layout on the target disks (receiver.disks) and open
                one rsync module per disk on its mounted root;
``CONVERTING``  make the copy boot on ECS (receiver.convert), then unmount;
``VERIFYING``   boot the converted disks under qemu on throw-away overlays
                (wire.bootcheck); ``--no-verify-boot`` skips it, and says so;
``SNAPSHOTTING`` / ``IMAGE_READY``: the cloud provider makes the image and releases.

Every step is idempotent: the worker runs a step again after a restart. What a step
learns is saved in the state folder (``prepare.json``, ``convert.json``,
``verify.json``) before the step ends.
"""

import logging
import os
import shutil

from receiver import cloudimage
from receiver.convert import convert
from receiver.disks import apply as disks
from receiver.disks import targets
from receiver.state import write_json_atomic
from wire import bootcheck, runner
from wire.errors import DiskError
from wire.manifest import IMAGE_FILE, render_image_description
from wire.paths import target_path

log = logging.getLogger(__name__)

PREPARE_FILE = "prepare.json"
LAYOUT_FILE = "prepare-layout.json"  # the planned layout, saved before PREPARING writes
TARGETS_FILE = "target-disks.json"  # the blank disks PREPARING chose, saved likewise
VERIFY_FILE = "verify.json"


def mount_root(store):
    return os.path.join(store.dir, "mnt")


def uses_disks(cfg):
    """Block devices as targets: named (``--disk``, cloud.json) or found blank
    (``auto_disks``: launched by hand, receiver.disks.targets)."""
    return bool(cfg.get("disks") or cfg.get("auto_disks"))


def target_disks(store, cfg=None):
    """{module: device}: the named ones, or those PREPARING chose among the blank disks
    (saved in TARGETS_FILE before anything was written: afterwards they are not blank)."""
    cfg = store.config() if cfg is None else cfg
    if cfg.get("disks"):
        return dict(cfg["disks"])
    return dict((store.read(TARGETS_FILE) or {}).get("disks") or {})


def choose_blank_disks(manifest, plan, cfg):
    """The blank disks of this machine matched to the plan's modules by size:
    {"disks": {module: device}, "force_wipe": [modules on disks named --force-wipe]}."""
    found, refused = targets.probe_blank_disks(
        force_wipe=tuple(cfg.get("force_wipe_devices") or ()))
    for r in refused:
        log.info("not a target disk: %s: %s", r["path"], r["reason"])
    chosen = targets.match_disks(targets.min_bytes(manifest, plan), found)
    forced = {d["path"] for d in found if d["forced"]}
    log.info("target disks chosen by size: %s", chosen)
    return {"disks": chosen, "force_wipe": sorted(m for m, p in chosen.items() if p in forced)}


def prepare_disks(ctx):
    """PREPARING on block devices (``serve --disk system=/dev/vdb ...``, or the blank
    disks of a receiver launched by hand)."""
    cfg = ctx.config
    ctx.progress(5, "checking the target disks")
    force_wipe = tuple(cfg.get("force_wipe") or ())
    chosen = None
    disk_map = target_disks(ctx.store, cfg)
    if not disk_map:
        chosen = choose_blank_disks(ctx.manifest, ctx.plan, cfg)
        disk_map, force_wipe = chosen["disks"], tuple(chosen["force_wipe"])

    def keep(layout):
        if chosen is not None:
            ctx.store.write(TARGETS_FILE, chosen)
        ctx.store.write(LAYOUT_FILE, layout)

    # The layout is kept before anything is written: a PREPARING interrupted by a
    # restart runs again on the same identifiers, so it recognises what it wrote.
    result = disks.prepare(ctx.manifest, ctx.plan, disk_map, mount_root(ctx.store),
                           force_wipe=force_wipe,
                           skip_mount_types=tuple(cfg.get("skip_mount_types") or ()),
                           layout=ctx.store.read(LAYOUT_FILE), on_layout=keep)
    ctx.store.write(PREPARE_FILE, result)
    modules = {name: {"module": name, "path": path}
               for name, path in sorted(result["modules"].items())}
    ctx.set(modules=modules, plan_review=result.get("review"))
    ctx.progress(100, "; ".join(result.get("actions") or ["disks ready"]))


CONVERT_FILE = "convert.json"


def ensure_prepared(ctx):
    """The disks mounted as PREPARING left them (after a restart they may not be):
    preparing again on disks that hold the layout only mounts them, data kept."""
    cfg = ctx.config
    before = ctx.store.read(PREPARE_FILE) or {}
    result = disks.prepare(ctx.manifest, ctx.plan, target_disks(ctx.store, cfg),
                           mount_root(ctx.store), force_wipe=(),
                           skip_mount_types=tuple(cfg.get("skip_mount_types") or ()),
                           layout=before.get("layout"))
    ctx.store.write(PREPARE_FILE, result)
    return result


# States in which the target disks must be mounted for the rsync modules.
OPEN_FOR_DATA = ("READY_FOR_DATA", "SYNCING")


def restore_mounts(store):
    """At ``serve`` start: when the migration waits for data on ``--disk`` targets,
    mount them again as PREPARING left them. After a reboot of the receiver (or a
    restart in a fresh mount namespace) they are not mounted, and rsync would write
    into the empty mount folders, not onto the disks. Returns the result or None."""
    cfg = store.config()
    doc = store.load()
    if not target_disks(store, cfg) or doc.get("state") not in OPEN_FOR_DATA:
        return None
    before = store.read(PREPARE_FILE) or {}
    result = disks.prepare(store.read("manifest.json", {}), store.read("plan.json", {}),
                           target_disks(store, cfg), mount_root(store), force_wipe=(),
                           skip_mount_types=tuple(cfg.get("skip_mount_types") or ()),
                           layout=before.get("layout"))
    store.write(PREPARE_FILE, result)
    log.info("target disks mounted again for %s: %s", doc["state"],
             ", ".join(m["path"] for m in result.get("mounts") or []))
    return result


CONVERT_START_FILE = "convert-start.json"
# Work folders initramfs tools make in /var/tmp and remove when they end normally; a
# conversion stopped in the middle (receiver restart) leaves them in the copy.
WORK_LEFTOVER_PREFIXES = ("mkinitramfs", "dracut.")


def leftovers(names_now, names_before):
    """Pure: the initramfs work folders in /var/tmp that the source did not have."""
    before = set(names_before)
    return sorted(n for n in names_now
                  if n not in before and n.startswith(WORK_LEFTOVER_PREFIXES))


def remove_work_leftovers(tmp, names_before):
    if os.path.islink(tmp) or not os.path.isdir(tmp):
        return []  # a symlinked /var/tmp would lead out of the copy
    gone = leftovers(os.listdir(tmp), names_before)
    for name in gone:
        path = os.path.join(tmp, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return gone


def convert_disks(ctx):
    """CONVERTING: make the copy boot on ECS (receiver.convert), then unmount."""
    ctx.progress(5, "mounting the target disks")
    result = ensure_prepared(ctx)
    root = result["modules"]["system"]
    tmp = target_path(root, "/var/tmp")
    before = ctx.store.read(CONVERT_START_FILE)
    if before is None:  # the first start of CONVERTING: what the source had
        before = {"var_tmp": sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []}
        ctx.store.write(CONVERT_START_FILE, before)
    else:  # run again after an interruption: remove what the first run left behind
        removed = remove_work_leftovers(tmp, before.get("var_tmp") or [])
        if removed:
            log.info("removed the work folders of an interrupted conversion: %s",
                     ", ".join(removed))
    ctx.progress(20, "converting the copy (fstab, GRUB, initramfs, network, cloud-init)")
    report = convert(result["modules"]["system"], result, ctx.manifest,
                     result["devices"]["system"], (ctx.manifest or {}).get("firmware") or "bios")
    ctx.store.write(CONVERT_FILE, report)
    release_disks(ctx)
    ctx.progress(100, "converted")


def target_disks_in_order(result):
    """The target devices, system disk first, then disk1..disk16 (the ECS order)."""
    devices = result.get("devices") or {}
    if "system" not in devices:
        raise DiskError("the preparation result names no system disk", code="disk.missing")
    data = sorted((k for k in devices if k != "system"), key=lambda k: int(k[4:]))
    return [devices["system"]] + [devices[k] for k in data]


def release_disks(ctx):
    """Unmount what PREPARING mounted (before a boot or a snapshot); safe twice."""
    result = ctx.store.read(PREPARE_FILE)
    if result:
        disks.release(result)


def verify_boot(ctx):
    """VERIFYING: a real boot of the converted disks; fails with the console tail."""
    cfg = ctx.config
    if cfg.get("verify_boot") == "provider":
        # In the local provider's VM: no nested qemu; the host boots the image set it
        # makes from these disks (image_build.cloud.local) and fails it with the console.
        release_disks(ctx)
        ctx.store.write(VERIFY_FILE, {"ok": None, "by": "provider",
                                      "reason": "the cloud provider verifies the image on "
                                                "its host"})
        ctx.progress(100, "verification boot left to the provider (done on the host when "
                          "it makes the image)")
        return
    if cfg.get("no_verify_boot"):
        ctx.store.write(VERIFY_FILE, {"ok": None, "skipped": True,
                                      "reason": "--no-verify-boot was given"})
        ctx.progress(100, "verification boot skipped (--no-verify-boot)")
        return
    result = ctx.store.read(PREPARE_FILE) or {}
    release_disks(ctx)
    devices = target_disks_in_order(result)
    firmware = (ctx.manifest or {}).get("firmware") or "bios"
    workdir = os.path.join(ctx.store.dir, "verify")
    ctx.progress(10, "booting the converted disks under qemu (%s)" % firmware)
    verdict = bootcheck.boot_and_watch(devices, firmware=firmware, workdir=workdir,
                                       timeout=int(cfg.get("verify_timeout") or 600))
    ctx.store.write(VERIFY_FILE, verdict.to_dict())
    if not verdict.ok:
        raise bootcheck.VerifyError(
            "verification boot failed: %s (console log: %s)"
            % (verdict.reason, os.path.join(workdir, "console.log")),
            code=verdict.code, hint="the image was not made; fix the source or the "
            "conversion and retry; the console tail is in verify.json")
    ctx.progress(100, "the converted system booted to a login prompt")


def render_local_image_description(doc_id, plan, manifest, disk_files, boot_mode):
    """image.json of the set this receiver makes (pure); ``disk_files``: [(module, path)]."""
    plan, manifest = plan or {}, manifest or {}
    return render_image_description(
        [(name, os.path.basename(path), None) for name, path in disk_files],
        image_name=plan.get("image_name") or "go2aliyun-%s" % doc_id, migration_id=doc_id,
        platform=plan.get("platform") or manifest.get("os", {}).get("name"),
        architecture=plan.get("architecture") or manifest.get("arch") or "x86_64",
        boot_mode=boot_mode)


def image_source(device):
    """What to read a target disk from: a loop device's backing file when there is one
    (qemu-img then skips its holes instead of reading gigabytes of zeros through the
    loop device: 66 s against 0.04 s for an empty 20 GiB disk), else the device."""
    name = os.path.basename(os.path.realpath(device))
    backing = "/sys/block/%s/loop/backing_file" % name
    try:
        with open(backing) as f:
            path = f.read().strip()
    except OSError:
        return device
    return path if path and os.path.isfile(path) else device


def image_folder(out, name):
    """``out/name``, the folder of a local image set, refused unless it (and its
    ``.part``) lies directly in ``out`` once links are resolved: the step removes and
    renames it. The API checks the name already (wire/manifest.image_name_problem);
    this holds whatever reaches the step."""
    final = os.path.join(out, name)
    base = os.path.realpath(out)
    # realpath raises ValueError on a NUL: such a name is refused as one that escapes
    inside = "\0" not in name and all(os.path.dirname(os.path.realpath(p)) == base
                                       for p in (final, final + ".part"))
    if not inside:
        raise DiskError("the image name %r would put the image outside %s"
                        % (name[:200], out), code="image.name_invalid",
                        hint="an image name is one folder name: letters, digits, "
                             "'.', ':', '_' or '-'")
    return final


def make_local_image(ctx):
    """SNAPSHOTTING with the ``local`` provider: each target disk becomes a qcow2 file
    in the output folder, with ``image.json`` describing the set. Written under a
    ``.part`` folder and renamed, so a half-made image never looks finished."""
    out = ctx.config.get("output") or os.path.join(ctx.store.dir, "image")
    name = (ctx.plan or {}).get("image_name") or ctx.doc["id"]
    final = image_folder(out, name)
    release_disks(ctx)
    result = ctx.store.read(PREPARE_FILE) or {}
    devices = result.get("devices") or {}
    order = ["system"] + sorted((k for k in devices if k != "system"), key=lambda k: int(k[4:]))
    if os.path.exists(os.path.join(final, IMAGE_FILE)):
        ctx.set(image={"provider": "local", "id": final, "path": final})
        return
    part = final + ".part"
    os.makedirs(part, exist_ok=True)
    files = []
    for i, module in enumerate(order):
        ctx.progress(100 * i // len(order), "writing %s to %s" % (module, part))
        path = os.path.join(part, "%s.qcow2" % module)
        os.sync()
        runner.run(["qemu-img", "convert", "-O", "qcow2", "-f", "raw",
                    image_source(devices[module]), path], timeout=6 * 3600)
        files.append((module, path))
    boot_mode = "UEFI" if (ctx.manifest or {}).get("firmware") == "uefi" else "BIOS"
    desc = render_local_image_description(ctx.doc["id"], ctx.plan, ctx.manifest, files,
                                          boot_mode)
    write_json_atomic(os.path.join(part, IMAGE_FILE), desc, mode=0o644)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(part, final)
    ctx.set(image={"provider": "local", "id": final, "path": final})
    ctx.progress(100, "image written to %s" % final)


def make_cloud_image(ctx):
    """SNAPSHOTTING with the ``aliyun`` provider: snapshots of the target disks and a
    custom image (receiver/cloudimage.py), waiting until it is Available."""
    release_disks(ctx)
    boot_mode = "UEFI" if (ctx.manifest or {}).get("firmware") == "uefi" else "BIOS"
    worker = cloudimage.on_receiver(ctx)
    image_id = worker.build_image(
        boot_mode=boot_mode,
        progress=lambda message: ctx.progress(50, message))
    ctx.set(image={"provider": "aliyun", "id": image_id})


def hand_disks_to_host(ctx):
    """SNAPSHOTTING inside the local provider's VM: the host takes the snapshots (copies
    of the disk files) and makes the image, so unmount and flush everything to the disks
    and say so."""
    release_disks(ctx)
    runner.run(["sync"])
    result = ctx.store.read(PREPARE_FILE) or {}
    ctx.set(image={"provider": "local", "by": "host", "id": None,
                   "disks": target_disks_in_order(result),
                   "next": "go2aliyun-cloud --provider local finish (on the host)"})
    ctx.progress(100, "disks unmounted and synced; the host makes the image")


def make_image(ctx):
    provider = ctx.config.get("provider") or "local"
    if provider == "aliyun":
        return make_cloud_image(ctx)
    if ctx.config.get("verify_boot") == "provider":
        return hand_disks_to_host(ctx)
    return make_local_image(ctx)


def release(ctx):
    """IMAGE_READY -> RELEASED. ``local``: nothing to release. ``aliyun``: the receiver
    releases its own instance after a grace period in which the source reads the
    image id (the network made by launch is released by `go2aliyun-cloud cleanup` or
    the all-in-one source)."""
    if (ctx.config.get("provider") or "local") != "aliyun":
        ctx.progress(100, "nothing to release (local provider)")
        return
    ctx.wait(float(ctx.config.get("release_grace_seconds", 600)))
    cloudimage.on_receiver(ctx).release_self()
