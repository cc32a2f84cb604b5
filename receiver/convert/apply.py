"""Carry out a conversion plan on a mounted target system (the effects).

``convert(target_root, prepare_result, manifest, system_device, firmware) -> report``
is the worker's CONVERTING step:

1. plan (pure, :func:`receiver.convert.plan.plan_conversion`);
2. write each edit atomically, keeping the original under :data:`BACKUP_DIR` of the copy
   (its path mirrored: ``/var/lib/go2aliyun/pre-migration/etc/fstab``), with
   :data:`MANIFEST` listing what was changed, created or removed. Never next to the
   file: boot tools read whole folders (initramfs-tools packs every file of
   ``conf.d``, so a ``resume.pre-migration`` there brought the old ``RESUME=`` back;
   ``modprobe.d``, ``sysctl.d``, ``udev/rules.d``, ``grub.d``... the same). An existing
   backup is never overwritten, so a rerun keeps the ORIGINAL;
3. run the commands in a sandbox (:func:`receiver.convert.chroot.sandbox`): the boot
   loader install, the initramfs of every kernel, cloud-init clean, and grub.cfg made
   once at the end;
4. name the filesystems by UUID in the generated grub.cfg (a chroot over loop devices
   makes ``root=/dev/loopNpM``);
5. the final pass (:func:`receiver.convert.check.verify_references`): ConversionError
   naming the exact broken reference.
"""

import json
import logging
import os
import stat

from receiver.convert import check
from receiver.convert.chroot import sandbox
from receiver.convert.inroot import in_root
from receiver.convert.plan import fix_generated_grub_cfg, plan_conversion, read_target
from receiver.convert.refs import Targets
from wire import files
from wire.errors import CommandError, ConversionError

log = logging.getLogger(__name__)

# One place in the copy for every original the conversion replaces (docs/ARCHITECTURE.md,
# "Conversion", tells how to restore from it).
BACKUP_DIR = "/var/lib/go2aliyun/pre-migration"
MANIFEST = BACKUP_DIR + "/manifest.json"


def write_atomic(path, content, mode=None):
    """Write ``content`` (text) to ``path`` atomically, keeping the mode and owner of
    the file it replaces (0644 root for a new one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    owner = None
    if os.path.exists(path):
        st = os.stat(path)
        owner = (st.st_uid, st.st_gid)
        if mode is None:
            mode = st.st_mode & 0o7777
    files.write_atomic(path, content, mode=0o644 if mode is None else mode, owner=owner)


class Backups:
    """The originals of the copy's files kept under :data:`BACKUP_DIR`, mirroring the
    path of the file kept (a symlink edited where it points is kept under the path of
    what it points to; a removed symlink is kept as a symlink), and the manifest: one
    entry per path (``path`` as edited, ``file`` the copy's file, ``action``
    changed|created|removed, ``backup`` or null, ``reason``). The first entry of a path
    wins across reruns, so the manifest and the backups stay those of the ORIGINAL."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.entries = []
        text = self._read_manifest()
        if text:
            self.entries = json.loads(text).get("entries", [])

    def _read_manifest(self):
        path = in_root(self.root, MANIFEST)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return f.read()

    def _known(self, rel):
        return any(e["path"] == rel for e in self.entries)

    def keep(self, rel, follow=True):
        """Keep the copy's ``rel`` (resolved inside the root) unless a backup of it
        exists; returns the backup's path in the copy, or None (nothing to keep)."""
        path = in_root(self.root, rel, follow=follow)
        if not os.path.lexists(path):
            return None
        file_rel = "/" + os.path.relpath(path, self.root)
        backup_rel = BACKUP_DIR + file_rel
        backup = in_root(self.root, backup_rel, follow=False)
        if os.path.lexists(backup):
            return backup_rel
        os.makedirs(os.path.dirname(backup), mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            tmp = backup + ".tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(os.readlink(path), tmp)
            os.rename(tmp, backup)
        else:
            with open(path, "rb") as src:
                data = src.read()
            files.write_atomic(backup, data, mode=st.st_mode & 0o7777,
                               owner=(st.st_uid, st.st_gid))
        return backup_rel

    def record(self, rel, action, reason, backup_rel=None, follow=True):
        if self._known(rel):
            return
        file_rel = "/" + os.path.relpath(in_root(self.root, rel, follow=follow), self.root)
        self.entries.append({"path": rel, "file": file_rel, "action": action,
                             "backup": backup_rel, "reason": reason})

    def save(self):
        text = json.dumps({"restore": "copy each backup to its file, remove each "
                           "created file, then rebuild the initramfs and grub.cfg "
                           "(docs/ARCHITECTURE.md, Conversion)",
                           "entries": self.entries}, indent=1) + "\n"
        if text == self._read_manifest():
            return
        path = in_root(self.root, MANIFEST, follow=False)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        files.write_atomic(path, text, mode=0o600)


def apply_edits(root, edits, backups=None):
    """Write the edits; every path resolved inside ``root`` (a symlink of the copy is
    followed as the copy sees it, never to the receiver's files). The originals go to
    ``backups`` (a :class:`Backups` of ``root``, saved here when not given)."""
    own = backups is None
    backups = Backups(root) if own else backups
    done = []
    for e in edits:
        if e.content is None:
            path = in_root(root, e.path, follow=False)  # the link itself goes
            if os.path.lexists(path):
                kept = backups.keep(e.path, follow=False)
                backups.record(e.path, "removed", e.reason, kept, follow=False)
                os.unlink(path)
                done.append({"path": e.path, "action": "removed", "reason": e.reason})
            continue
        path = in_root(root, e.path)
        existed = os.path.exists(path)
        if existed:
            with open(path, errors="surrogateescape") as f:
                if f.read() == e.content:
                    continue
            kept = backups.keep(e.path)
        backups.record(e.path, "changed" if existed else "created", e.reason,
                       kept if existed else None)
        write_atomic(path, e.content)
        done.append({"path": e.path, "action": "changed" if existed else "created",
                     "reason": e.reason})
    if own:
        backups.save()
    return done


def run_commands(root, commands, firmware, system_device=None):
    ran = []
    with sandbox(root, firmware, system_device) as run:
        for c in commands:
            log.info("in the chroot: %s (%s)", " ".join(c.argv), c.why)
            try:
                run(c.argv, env=c.env)
            except CommandError as e:
                raise ConversionError(
                    "conversion step failed: %s (%s): %s" % (" ".join(c.argv), c.why,
                                                             e.message),
                    code="conversion.command_failed",
                    hint="the console output of the command is in the receiver log") from e
            ran.append(c.argv)
    return ran


def convert(target_root, prepare_result, manifest, system_device, firmware="bios"):
    """Make the copy at ``target_root`` (the mounted system module) boot on ECS.
    Returns a JSON-able report: family, kernels, edits, commands run, notes."""
    targets = Targets(prepare_result, manifest)
    plan = plan_conversion(target_root, prepare_result, manifest, firmware, system_device,
                           targets=targets)
    backups = Backups(target_root)
    edited = apply_edits(target_root, plan.edits, backups)
    # grub.cfg is regenerated by a command: keep the source's own copy too
    kept = backups.keep(plan.grub_cfg)
    if kept:
        backups.record(plan.grub_cfg, "changed", "regenerated by the boot loader's tool",
                       kept)
    backups.save()
    ran = run_commands(target_root, plan.commands, firmware, system_device)
    cfg_path = in_root(target_root, plan.grub_cfg)
    text = read_target(target_root, plan.grub_cfg)
    if text is not None:
        fixed = fix_generated_grub_cfg(text, targets)
        if fixed != text:
            write_atomic(cfg_path, fixed)
            edited.append({"path": plan.grub_cfg, "action": "changed",
                           "reason": "root=UUID= instead of the receiver's device names"})
    check.verify_references(target_root, targets, plan.grub_cfg, firmware)
    return dict(plan.to_json(), edits=edited, commands=ran)  # the plan's keys, in order


__all__ = ["convert", "apply_edits", "run_commands", "write_atomic", "Backups",
           "BACKUP_DIR", "MANIFEST"]
