"""The one way to reach a file of the system being migrated or converted."""

import os


def target_path(root, *parts):
    """Join ``parts`` under ``root`` (a mounted system, or ``/``).

    Absolute parts are taken as relative to ``root``; ``..`` cannot climb above it.
    ``target_path("/mnt/t", "/etc/fstab") == "/mnt/t/etc/fstab"``.
    """
    root = os.path.abspath(root or "/")
    rel = os.path.normpath(os.path.join("/", *[str(p) for p in parts])).lstrip("/")
    return os.path.join(root, rel) if rel else root


def dm_path(vg, lv):
    """The device-mapper path of LV ``lv`` in VG ``vg``: ``/dev/mapper/<vg>-<lv>`` with
    each dash in either name doubled (``debian-vg``/``root`` -> ``debian--vg-root``)."""
    return "/dev/mapper/%s-%s" % (vg.replace("-", "--"), lv.replace("-", "--"))


def lv_paths(vg, lv):
    """Both names the system gives an LV: ``/dev/<vg>/<lv>`` and :func:`dm_path`."""
    return ("/dev/%s/%s" % (vg, lv), dm_path(vg, lv))
