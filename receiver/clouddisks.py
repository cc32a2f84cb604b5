"""The receiver's target disks on a cloud instance, found by disk id.

ECS gives each disk a virtio serial that is its disk id, so the guest sees
``/dev/disk/by-id/virtio-<disk id>``; the local provider does the same with qemu's
``serial=``. ``/etc/go2aliyun/cloud.json`` (written by launch through user-data) lists
``target_disks`` (names, the system disk first) and ``target_disk_ids`` (the same order).
A virtio serial holds at most 20 characters, so the link carries the id's first 20.
"""

import os
import re

from wire.errors import DiskError

BY_ID = "/dev/disk/by-id"
VIRTIO_SERIAL_MAX = 20
_DATA_NAME = re.compile(r"-disk(\d+)$")


def module_for(position, name):
    """``system`` for the first target disk, ``disk<N>`` for ``go2aliyun-target-disk<N>``."""
    if position == 0:
        return "system"
    m = _DATA_NAME.search(name or "")
    return "disk%d" % int(m.group(1)) if m else "disk%d" % position


def resolve(disks):
    """The kernel names behind the by-id links (``/dev/vdb``), which partition nodes are
    named after; a link that does not exist (yet) stays as it is, and PREPARING says
    which disk is missing."""
    return {m: os.path.realpath(p) if os.path.exists(p) else p for m, p in disks.items()}


def disks_from_cloud_config(config, by_id=BY_ID):
    """``{"system": "/dev/disk/by-id/virtio-<id>", "disk1": ...}`` (pure), or {} when
    cloud.json names no disk ids (then ``--disk`` must be given)."""
    ids = list(config.get("target_disk_ids") or [])
    if not ids:
        return {}
    names = list(config.get("target_disks") or [])
    if names and len(names) != len(ids):
        raise DiskError("cloud.json lists %d target disks but %d disk ids" % (
            len(names), len(ids)), code="disk.cloud_config",
            hint="relaunch the instance: its cloud.json is inconsistent")
    out = {}
    for n, disk_id in enumerate(ids):
        module = module_for(n, names[n] if names else "")
        out[module] = "%s/virtio-%s" % (by_id, str(disk_id)[:VIRTIO_SERIAL_MAX])
    return out
