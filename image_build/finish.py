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

import functools
import logging

from image_build.cloud import ImageSpec, client_token
from image_build.cloud.base import TAGGED_KINDS, migration_tags
from image_build.launch import TARGET_SYSTEM_DISK
from wire.errors import CloudError

log = logging.getLogger(__name__)


class TargetDisk(object):
    """One disk of the instance proven to carry a target disk: ``role`` system (index 0)
    or data (its data disk index)."""

    def __init__(self, disk_id, role, index, size_gib):
        self.disk_id, self.role, self.index, self.size_gib = disk_id, role, int(index), \
            int(size_gib)

    def to_dict(self):
        return {"disk_id": self.disk_id, "role": self.role, "index": self.index,
                "size_gib": self.size_gib}

    def __repr__(self):
        return "TargetDisk(%s, %s %d, %dGiB)" % (self.disk_id, self.role, self.index,
                                                 self.size_gib)


def _unproven(instance_id, why):
    return CloudError("cannot tell which disk of instance %s is which target disk: %s" % (
        instance_id, why), code="cloud.target_disk_unproven",
        hint="give the data disks the names launch uses (go2aliyun-target-system, "
             "go2aliyun-target-disk<N>) in the ECS console, or attach them in order "
             "(target system disk first); nothing was snapshotted")


def plan_target_disks(instance_id, disks, layout=None, names=None):
    """Pure: which of ``disks`` (the instance's, from :meth:`Cloud.instance_disks`) is
    which target disk, target system disk first. Proven by, in this order: the names launch
    gave them; the sizes launch asked for (``layout``) when each size fits exactly one
    disk; the device order when every disk has a device (and the sizes of ``layout``
    agree). Anything else raises ``cloud.target_disk_unproven``: never a guess."""
    data = [d for d in disks if d.role != "system"]
    if layout:
        names = [t["name"] for t in layout]
    if not names and not layout:
        named = sorted(d.name for d in data if d.name.startswith("go2aliyun-target-"))
        names = named if TARGET_SYSTEM_DISK in named else None
    if names:
        roles = [("system", 0)] + [("data", int(n.rsplit("disk", 1)[1])) for n in names
                                   if n != TARGET_SYSTEM_DISK]
        names = [TARGET_SYSTEM_DISK] + [n for n in names if n != TARGET_SYSTEM_DISK]
        by_name = {}
        for d in data:
            if d.name:
                by_name.setdefault(d.name, []).append(d)
        if all(len(by_name.get(n, [])) == 1 for n in names):
            return [TargetDisk(by_name[n][0].id, role, index, by_name[n][0].size_gib)
                    for n, (role, index) in zip(names, roles)]
        if not layout and any(d.name for d in data):
            missing = [n for n in names if len(by_name.get(n, [])) != 1]
            raise CloudError("instance %s has no single disk named %s" % (
                instance_id, ", ".join(missing)), code="cloud.target_disk_missing",
                hint="the data disks made by launch were detached or renamed")
    if not data:
        raise CloudError("instance %s has no data disk to snapshot" % instance_id,
                         code="cloud.target_disk_missing")
    if layout:
        if len(data) != len(layout):
            raise _unproven(instance_id, "it has %d data disks, launch made %d" % (
                len(data), len(layout)))
        sizes = [d.size_gib for d in data]
        if all(sizes.count(t["size_gib"]) == 1 for t in layout) and \
                sorted(sizes) == sorted(t["size_gib"] for t in layout):
            by_size = {d.size_gib: d for d in data}
            return [TargetDisk(by_size[t["size_gib"]].id, t["role"], t["index"],
                               t["size_gib"]) for t in layout]
        if all(d.device for d in data):
            ordered = sorted(data, key=lambda d: d.device)
            if [d.size_gib for d in ordered] == [t["size_gib"] for t in layout]:
                return [TargetDisk(d.id, t["role"], t["index"], d.size_gib)
                        for d, t in zip(ordered, layout)]
        raise _unproven(instance_id, "the disks have no names, and sizes %s (GiB) do not "
                        "single out %s" % (sorted(sizes), ", ".join(
                            "%s %d: %d GiB" % (t["role"], t["index"], t["size_gib"])
                            for t in layout)))
    if all(d.device for d in data):
        ordered = sorted(data, key=lambda d: d.device)
        return [TargetDisk(d.id, "system" if n == 0 else "data", n, d.size_gib)
                for n, d in enumerate(ordered)]
    raise _unproven(instance_id, "its data disks have neither names nor devices")


def target_disks(cloud, instance_id, names=None, layout=None):
    """The instance's disks that carry the migrated system, target system disk first
    (:func:`plan_target_disks` on what the cloud says)."""
    return plan_target_disks(instance_id, cloud.instance_disks(instance_id), layout=layout,
                             names=names)


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
    if state.get("target_disks"):
        disks = [TargetDisk(**t) for t in state.get("target_disks")]
    else:
        disks = target_disks(cloud, instance_id, disk_names, state.get("target_layout"))
        state.set("target_disks", [d.to_dict() for d in disks])
    snaps = dict(state.get("snapshots") or {})
    tags = migration_tags(mid)
    for disk in disks:
        if disk.disk_id not in snaps:
            label = "system" if disk.role == "system" else "disk%d" % disk.index
            token = client_token(mid, "snapshot-" + disk.disk_id)
            snap_id = state.create("snapshot:" + disk.disk_id, token, functools.partial(
                cloud.create_snapshot, disk.disk_id, "go2aliyun-%s-%s" % (mid, label), token,
                tags=tags))
            snaps[disk.disk_id] = snap_id
            state.end_create("snapshot:" + disk.disk_id, snapshots=dict(snaps))
    for n, disk in enumerate(disks):
        def tell(s, n=n):
            if progress:
                progress("snapshot %d/%d: %s" % (n + 1, len(disks), s.get("progress")))
        cloud.wait_snapshot(snaps[disk.disk_id], progress=tell)
    image_id = state.get("image_id")
    if not image_id:
        spec = ImageSpec(image_name, [(snaps[d.disk_id], d.size_gib) for d in disks],
                         platform=platform or "Others Linux", architecture=architecture,
                         boot_mode=boot_mode,
                         description="go2aliyun migration %s" % mid, tags=tags)
        state.set("status", "CreatingImage")
        image_id = state.create("image", client_token(mid, "image"),
                                lambda: cloud.create_image(spec, client_token(mid, "image")))
        state.end_create("image", image_id=image_id, image_name=image_name)
    cloud.wait_image(image_id, progress=lambda i: progress and progress(
        "image: %s" % i.get("progress")))
    state.update(image_status="Available", status="ImageReady")
    log.info("image %s (%s) is Available", image_id, image_name)
    return image_id


# -- release and cleanup: find (recorded ids + tag), plan (pure), apply ----------------
KEEP_IMAGE_STATES = ("Available", "Creating", "Waiting")
NETWORK = (("security_groups", "security_group_id", "security_group"),
           ("vswitches", "vswitch_id", "vswitch"), ("vpcs", "vpc_id", "vpc"))


class CleanupReport(object):
    """What cleanup deleted and kept (and why), by kind and id."""

    def __init__(self):
        self.deleted = []   # (kind, id)
        self.kept = []      # (kind, id, why)

    def lines(self):
        out = ["deleted: %s %s" % (k, i) for k, i in self.deleted]
        out += ["kept: %s %s (%s)" % (k, i, why) for k, i, why in self.kept]
        return out or ["nothing to delete"]


def find_resources(cloud, state, images=True):
    """``{kind: {id: record}}``: the ids in ``state`` and everything carrying the
    migration's tag, so a create whose answer was lost is found too. ``images``: also the
    images and snapshots (release leaves those alone)."""
    found = {kind: {} for kind in TAGGED_KINDS}
    if state.get("migration_id"):
        for kind, records in cloud.find_tagged(migration_tags(state.get("migration_id"))).items():
            for rec in records:
                found[kind][rec["id"]] = rec
    if state.get("instance_id") and not (state.get("released") or {}).get("instance") and \
            cloud.instance(state.get("instance_id")) is not None:
        found["instances"].setdefault(state.get("instance_id"), {"id": state.get(
            "instance_id")})
    created = state.get("created") or {}
    released = state.get("released") or {}
    for kind, key, flag in NETWORK:  # apply_cleanup skips a VPC/vSwitch that is gone
        res_id = state.get(key)
        if res_id and created.get(flag) and not released.get(flag):
            found[kind].setdefault(res_id, {"id": res_id})
    if not images:
        found["images"], found["snapshots"] = {}, {}
        return found
    for snap_id in (state.get("snapshots") or {}).values():
        if cloud.snapshot(snap_id) is not None:
            found["snapshots"].setdefault(snap_id, {"id": snap_id})
    if state.get("image_id"):
        img = cloud.image(state.get("image_id"))
        if img is not None:
            found["images"][img["id"]] = dict(found["images"].get(img["id"]) or {}, **img)
    return found


def plan_cleanup(found, delete_snapshots=True):
    """Pure: ``[(action, kind, id)]`` in dependency order (instances -> images that failed
    -> snapshots no kept image uses -> security group -> vSwitch -> VPC) and ``kept``
    ``[(kind, id, why)]``. An image that is Available (or still being made) is the
    migration's result: it and the snapshots it is made of are kept."""
    steps, kept = [], []
    for inst_id in sorted(found["instances"]):
        steps.append(("delete", "instance", inst_id))
    if found["instances"]:
        steps.append(("wait_gone", "instance", None))
    used = set()
    for img_id, img in sorted(found["images"].items()):
        if img.get("status") in KEEP_IMAGE_STATES:
            why = "the migration's image (%s)" % img.get("status")
            if img.get("status") != "Available":
                why += ": run finish to wait for it, or delete it in the ECS console"
            kept.append(("image", img_id, why))
            for snap_id in img.get("snapshot_ids") or []:
                used.add(snap_id)
                kept.append(("snapshot", snap_id, "image %s is made of it" % img_id))
        else:
            steps.append(("delete", "image", img_id))
    for snap_id in sorted(found["snapshots"]):
        if snap_id in used:
            continue
        if delete_snapshots:
            steps.append(("delete", "snapshot", snap_id))
        else:
            kept.append(("snapshot", snap_id, "not asked to delete snapshots"))
    for kind, _, flag in NETWORK:
        for res_id in sorted(found[kind]):
            steps.append(("delete", flag, res_id))
    return steps, kept


def apply_cleanup(cloud, state, steps, kept):
    report = CleanupReport()
    released = dict(state.get("released") or {})
    deleters = {"instance": cloud.delete_instance, "image": cloud.delete_image,
                "snapshot": cloud.delete_snapshot,
                "security_group": cloud.delete_security_group,
                "vswitch": cloud.delete_vswitch, "vpc": cloud.delete_vpc}
    # a VPC or vSwitch still Pending (its create answered just now) cannot be deleted yet
    ready = {"vpc": (cloud.vpc, cloud.wait_vpc_available),
             "vswitch": (cloud.vswitch, cloud.wait_vswitch_available)}
    waiting = []
    for action, kind, res_id in steps:
        if action == "wait_gone":
            for inst_id in waiting:
                cloud.wait_instance_gone(inst_id)
            continue
        if kind in ready:
            now = ready[kind][0](res_id)
            if now is None:
                continue
            if now["status"] != "Available":
                ready[kind][1](res_id)
        deleters[kind](res_id)
        if kind == "instance":
            waiting.append(res_id)
        report.deleted.append((kind, res_id))
        if res_id in (state.get("instance_id"), state.get("vpc_id"), state.get("vswitch_id"),
                      state.get("security_group_id")):
            released[kind] = True
            state.set("released", dict(released))
        if kind == "snapshot":
            state.set("snapshots", {k: v for k, v in (state.get("snapshots") or {}).items()
                                    if v != res_id})
    state.set("in_flight", {})
    report.kept.extend(kept)
    return report


def release(cloud, state, release_network=True):
    """Delete the intermediate instance, then (``release_network``) the security group,
    vSwitch and VPC made for it (found by recorded id and by the migration's tag); never
    ones the user supplied. Snapshots and images are left alone. Returns ``released``."""
    if not release_network:
        # the receiver, with its RAM role, releases its own instance only
        released = dict(state.get("released") or {})
        inst_id = state.get("instance_id")
        if inst_id and not released.get("instance"):
            cloud.delete_instance(inst_id)
            cloud.wait_instance_gone(inst_id)
            released["instance"] = True
            state.set("released", dict(released))
        return released
    steps, kept = plan_cleanup(find_resources(cloud, state, images=False))
    apply_cleanup(cloud, state, steps, kept)
    _mark_done(state)
    return dict(state.get("released") or {})


def _mark_done(state):
    state.set("status", "Released" if state.get("image_status") == "Available"
              else "Cleaned")


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
    """Release everything of a migration, found by recorded id and by its tag: instances
    (waited until gone), images that failed, snapshots no kept image uses, then the
    security group, vSwitch and VPC launch made. Returns a :class:`CleanupReport`; an
    Available image and its snapshots are kept (the result of the migration)."""
    steps, kept = plan_cleanup(find_resources(cloud, state))
    report = apply_cleanup(cloud, state, steps, kept)
    _mark_done(state)
    return report
