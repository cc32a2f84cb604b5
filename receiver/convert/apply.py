"""Carry out a conversion plan on a mounted target system (the effects).

``convert(target_root, prepare_result, manifest, system_device, firmware) -> report``
is the worker's CONVERTING step:

1. plan (pure, :func:`receiver.convert.plan.plan_conversion`);
2. write each edit atomically, keeping the original as ``<file>.pre-migration`` (an
   existing ``.pre-migration`` copy is never overwritten, so a rerun keeps the
   ORIGINAL); a removed file is renamed to its ``.pre-migration`` name;
3. run the commands in a chroot (:func:`receiver.convert.chroot.chroot`): the boot
   loader install, the initramfs of every kernel, cloud-init clean, and grub.cfg made
   once at the end;
4. name the filesystems by UUID in the generated grub.cfg (a chroot over loop devices
   makes ``root=/dev/loopNpM``);
5. the final pass (:func:`receiver.convert.check.verify_references`): ConversionError
   naming the exact broken reference.
"""

import logging
import os
import tempfile

from receiver.convert import check
from receiver.convert.chroot import chroot
from receiver.convert.plan import fix_generated_grub_cfg, plan_conversion, read_target
from receiver.convert.refs import Targets
from wire.errors import CommandError, ConversionError
from wire.paths import target_path

log = logging.getLogger(__name__)

PRE = ".pre-migration"


def write_atomic(path, content, mode=None):
    """Write ``content`` (text) to ``path`` through a temporary file and a rename."""
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    if mode is None:
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(prefix=".go2aliyun-", dir=d)
    try:
        with os.fdopen(fd, "w", errors="surrogateescape") as f:
            f.write(content)
        os.chmod(tmp, mode)
        if os.path.exists(path):
            st = os.stat(path)
            os.chown(tmp, st.st_uid, st.st_gid)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def keep_original(path):
    """Copy ``path`` to ``path.pre-migration`` unless that copy exists already."""
    pre = path + PRE
    if not os.path.lexists(path) or os.path.lexists(pre):
        return None
    with open(path, "rb") as src:
        data = src.read()
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(prefix=".go2aliyun-", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.rename(tmp, pre)
    return pre


def apply_edits(root, edits):
    done = []
    for e in edits:
        path = target_path(root, e["path"])
        if e["content"] is None:
            if os.path.lexists(path):
                if os.path.lexists(path + PRE):
                    os.unlink(path)
                else:
                    os.rename(path, path + PRE)
                done.append({"path": e["path"], "action": "removed", "reason": e["reason"]})
            continue
        existed = os.path.exists(path)
        if existed:
            with open(path, errors="surrogateescape") as f:
                if f.read() == e["content"]:
                    continue
            keep_original(path)
        write_atomic(path, e["content"])
        done.append({"path": e["path"], "action": "changed" if existed else "created",
                     "reason": e["reason"]})
    return done


def run_commands(root, commands, firmware):
    ran = []
    with chroot(root, firmware) as run:
        for c in commands:
            log.info("in the chroot: %s (%s)", " ".join(c["argv"]), c["why"])
            try:
                run(c["argv"], env=c.get("env"))
            except CommandError as e:
                raise ConversionError(
                    "conversion step failed: %s (%s): %s" % (" ".join(c["argv"]), c["why"],
                                                             e.message),
                    code="conversion.command_failed",
                    hint="the console output of the command is in the receiver log") from e
            ran.append(c["argv"])
    return ran


def convert(target_root, prepare_result, manifest, system_device, firmware="bios"):
    """Make the copy at ``target_root`` (the mounted system module) boot on ECS.
    Returns a JSON-able report: family, kernels, edits, commands run, notes."""
    targets = Targets(prepare_result, manifest)
    plan = plan_conversion(target_root, prepare_result, manifest, firmware, system_device,
                           targets=targets)
    edited = apply_edits(target_root, plan["edits"])
    ran = run_commands(target_root, plan["commands"], firmware)
    cfg_path = target_path(target_root, plan["grub_cfg"])
    text = read_target(target_root, plan["grub_cfg"])
    if text is not None:
        fixed = fix_generated_grub_cfg(text, targets)
        if fixed != text:
            write_atomic(cfg_path, fixed)
            edited.append({"path": plan["grub_cfg"], "action": "changed",
                           "reason": "root=UUID= instead of the receiver's device names"})
    check.verify_references(target_root, targets, plan["grub_cfg"], firmware)
    return {"family": plan["family"], "os_id": plan["os_id"], "firmware": firmware,
            "system_device": system_device, "kernels": plan["kernels"], "edits": edited,
            "commands": ran, "grub_cfg": plan["grub_cfg"], "notes": plan["notes"]}


__all__ = ["convert", "apply_edits", "run_commands", "write_atomic", "keep_original"]
