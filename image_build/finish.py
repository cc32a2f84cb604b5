"""After VERIFYING: snapshot each target disk, create the custom image, wait until it is
Available, then release the intermediate instance and only the network resources made
for it. Resumable like launch: ids are recorded before the next call, creates carry
ClientTokens, deletes of things already gone succeed.

The receiver runs :func:`build_image` with its RAM role and then :func:`release` for its
own instance (``release_network=False``: it cannot outlive its instance;
``receiver/cloudimage.py``); the launcher's
``cleanup`` (or the all-in-one source flow) runs :func:`release` with the full state to
remove the VPC, vSwitch and security group it made.
"""

import logging

from image_build.cloud import ImageSpec, client_token
from image_build.launch import TARGET_SYSTEM_DISK
from wire.errors import CloudError

log = logging.getLogger(__name__)


def target_disks(cloud, instance_id, names=None):
    """The instance's disks that carry the migrated system, target system disk first.

    Disks are recognised by the names launch gave them (``go2aliyun-target-system``,
    ``go2aliyun-target-disk<N>``); an instance started by hand (no such names) uses its
    data disks in device order. The instance's own system disk is never a target."""
    disks = [d for d in cloud.instance_disks(instance_id) if d.role != "system"]
    named = {d.name: d for d in disks if d.name.startswith("go2aliyun-target-")}
    if names:
        missing = [n for n in names if n not in named]
        if missing:
            raise CloudError("instance %s has no disk named %s" % (instance_id,
                                                                    ", ".join(missing)),
                             code="cloud.target_disk_missing",
                             hint="the data disks made by launch were detached or renamed")
        return [named[n] for n in names]
    if named:
        def order(name):
            if name == TARGET_SYSTEM_DISK:
                return 0
            return int(name.rsplit("disk", 1)[1])
        return [named[n] for n in sorted(named, key=order)]
    if not disks:
        raise CloudError("instance %s has no data disk to snapshot" % instance_id,
                         code="cloud.target_disk_missing")
    return disks


def build_image(cloud, state, instance_id, image_name, platform="Others Linux",
                architecture="x86_64", boot_mode="BIOS", disk_names=None, progress=None):
    """Snapshots -> image -> Available. Returns the image id."""
    mid = state.get("migration_id")
    if not mid:
        raise CloudError("the state has no migration id", code="cloud.state_incomplete",
                         hint="run finish with the state file of the launch")
    if state.get("image_id") and state.get("image_status") == "Available":
        return state.get("image_id")
    state.set("status", "Snapshotting")
    disks = target_disks(cloud, instance_id, disk_names)
    snaps = dict(state.get("snapshots") or {})
    for disk in disks:
        key = disk.name or disk.device
        if key not in snaps:
            snap_id = cloud.create_snapshot(disk.id, "go2aliyun-%s-%s" % (mid, key.rsplit(
                "-", 1)[-1]), client_token(mid, "snapshot-" + key))
            snaps[key] = snap_id
            state.set_in("snapshots", key, snap_id)
    for n, disk in enumerate(disks):
        key = disk.name or disk.device

        def tell(s, n=n):
            if progress:
                progress("snapshot %d/%d: %s" % (n + 1, len(disks), s.get("progress")))
        cloud.wait_snapshot(snaps[key], progress=tell)
    image_id = state.get("image_id")
    if not image_id:
        spec = ImageSpec(image_name, [(snaps[d.name or d.device], d.size_gib) for d in disks],
                         platform=platform or "Others Linux", architecture=architecture,
                         boot_mode=boot_mode,
                         description="go2aliyun migration %s" % mid)
        state.set("status", "CreatingImage")
        image_id = cloud.create_image(spec, client_token(mid, "image"))
        state.update(image_id=image_id, image_name=image_name)
    cloud.wait_image(image_id, progress=lambda i: progress and progress(
        "image: %s" % i.get("progress")))
    state.update(image_status="Available", status="ImageReady")
    log.info("image %s (%s) is Available", image_id, image_name)
    return image_id


def release(cloud, state, release_network=True):
    """Delete the intermediate instance, then (``release_network``) the security group,
    vSwitch and VPC that were made for it; never ones the user supplied."""
    released = dict(state.get("released") or {})

    def mark(kind):
        released[kind] = True
        state.set("released", dict(released))

    inst_id = state.get("instance_id")
    if inst_id and not released.get("instance"):
        cloud.delete_instance(inst_id)
        cloud.wait_instance_gone(inst_id)
        mark("instance")
    if not release_network:
        return released
    created = state.get("created") or {}
    for kind, key, delete in (("security_group", "security_group_id",
                               cloud.delete_security_group),
                              ("vswitch", "vswitch_id", cloud.delete_vswitch),
                              ("vpc", "vpc_id", cloud.delete_vpc)):
        res_id = state.get(key)
        if res_id and created.get(kind) and not released.get(kind):
            delete(res_id)
            mark(kind)
    state.set("status", "Released" if state.get("image_status") == "Available"
              else "Cleaned")
    return released


def finish(cloud, state, image_name=None, platform="Others Linux", architecture="x86_64",
           boot_mode="BIOS", release_network=True, progress=None):
    """The whole after-VERIFYING part from the launcher's state: image, then release."""
    image_id = build_image(cloud, state, state.get("instance_id"),
                           image_name or state.get("image_name"), platform=platform,
                           architecture=architecture, boot_mode=boot_mode,
                           progress=progress)
    release(cloud, state, release_network=release_network)
    return image_id


def cleanup(cloud, state):
    """Release everything recorded for a migration. Snapshots are deleted only when no
    image was made from them (an image needs its snapshots)."""
    if not state.get("image_id"):
        snaps = dict(state.get("snapshots") or {})
        for key, snap_id in sorted(snaps.items()):
            cloud.delete_snapshot(snap_id)
            snaps.pop(key)
            state.set("snapshots", dict(snaps))
    return release(cloud, state, release_network=True)
