"""The final pass: every reference in the converted system resolves on the new disks.

Pure functions over file texts (``check_fstab``, ``check_crypttab``, ``check_boot_config``)
return problems; :func:`verify_references` reads the files of a converted tree and
raises :class:`wire.errors.ConversionError` naming each broken reference (file, line,
the reference) before any boot is tried.
"""

import glob
import os
import re

from receiver.convert.inroot import in_root
from receiver.convert.plan import _has_opt, fstab_kept, read_target
from wire import parsers
from wire.errors import ConversionError


def check_fstab(text, targets, where="/etc/fstab"):
    malformed = []
    entries = parsers.parse_fstab(text, malformed)
    problems = [(n, "%s line %d: %r is not an fstab entry" % (where, n, line))
                for n, line in malformed]
    for e in entries:
        spec, mp = e["spec"], e["file"]
        if fstab_kept(e) or _has_opt(e["mntops"], "noauto"):
            continue
        if not targets.resolves_now(spec):
            problems.append((e["line"], "%s line %d: %s (mount point %s) names no filesystem "
                             "on the new disks" % (where, e["line"], spec, mp)))
    return [msg for _n, msg in sorted(problems, key=lambda p: p[0])]


def check_crypttab(text, targets, where="/etc/crypttab"):
    problems = []
    for n, raw in enumerate(text.splitlines(), 1):
        f = raw.split()
        if not f or f[0].startswith("#") or len(f) < 2:
            continue
        if not targets.resolves_now(f[1]):
            problems.append("%s line %d: %s (for %s) names no device on the new disks"
                            % (where, n, f[1], f[0]))
    return problems


_KERNEL_LINE = re.compile(r"^\s*(linux|linux16|linuxefi|options|kernelopts=)\s*(.*)$")
_SEARCH_UUID = re.compile(r"^\s*search\b.*--fs-uuid.*\s([0-9A-Fa-f][0-9A-Fa-f-]{7,})\s*$")


def check_boot_config(text, targets, where):
    """grub.cfg, a BLS entry or the EFI wrapper: root=/resume= on kernel lines and the
    UUIDs GRUB searches for must be on the new disks."""
    problems = []
    uuids = {(f.get("uuid") or "").lower() for f in targets.filesystems}
    for n, raw in enumerate(text.splitlines(), 1):
        m = _KERNEL_LINE.match(raw)
        if m:
            for tok in m.group(2).split():
                key, eq, val = tok.partition("=")
                if eq and key in ("root", "resume") and not val.startswith("$") \
                        and not targets.resolves_now(val):
                    problems.append("%s line %d: %s names no filesystem on the new disks"
                                    % (where, n, tok))
        m = _SEARCH_UUID.match(raw)
        if m and m.group(1).lower() not in uuids:
            problems.append("%s line %d: GRUB searches for UUID %s, which is on none of "
                            "the new disks" % (where, n, m.group(1)))
    return problems


def collect_problems(root, targets, grub_cfg, firmware="bios", efi_dir="/boot/efi"):
    problems = []
    text = read_target(root, "/etc/fstab")
    if text is None:
        problems.append("/etc/fstab is missing")
    else:
        problems += check_fstab(text, targets)
    text = read_target(root, "/etc/crypttab")
    if text:
        problems += check_crypttab(text, targets)
    text = read_target(root, grub_cfg)
    if text is None:
        problems.append("%s is missing: the boot loader has no configuration" % grub_cfg)
    else:
        problems += check_boot_config(text, targets, grub_cfg)
    for p in sorted(glob.glob(in_root(root, "/boot/loader/entries/*.conf"))):
        rel = "/boot/loader/entries/" + os.path.basename(p)
        problems += check_boot_config(read_target(root, rel), targets, rel)
    if firmware == "uefi":
        for p in sorted(glob.glob(in_root(root, efi_dir, "EFI/*/grub.cfg"))):
            rel = os.path.join(efi_dir, os.path.relpath(p, in_root(root, efi_dir)))
            if rel != grub_cfg:
                problems += check_boot_config(read_target(root, rel), targets, rel)
    return problems


def verify_references(root, targets, grub_cfg, firmware="bios"):
    """Raise ConversionError listing every reference that does not resolve."""
    problems = collect_problems(root, targets, grub_cfg, firmware)
    if problems:
        raise ConversionError(
            "the converted system has %d broken reference(s): %s"
            % (len(problems), "; ".join(problems)),
            code="conversion.broken_reference",
            hint="this is a conversion bug or an unsupported layout; the disks are left "
            "as they are for inspection", problems=problems)
    return []


__all__ = ["check_fstab", "check_crypttab", "check_boot_config", "collect_problems",
           "verify_references"]
