"""The preflight's checks, which ``go2aliyun check`` shows.

The seed's precautions and more: root, rsync present (and recent enough), SELinux
(explained: labels are kept), virtio drivers in every kernel, GRUB 2 >= 1.99 (legacy
GRUB refused with the fix), clock sanity, sizes against the used space they must hold,
data disk paths that exist and are mount points, the platform and architecture against
the source, and what the exclude files do.

* :func:`probe_facts` reads the few things the manifest does not hold (euid, clock,
  whether each ``src_path`` exists, the config file's mode);
* :func:`evaluate` is pure: ``(config, manifest, facts) -> [finding, ...]``;
* :func:`build_plan` makes the plan the receiver gets (no secrets);
* :func:`render_table` and :func:`failure` render the report of a preflight
  (:mod:`source_script.preflight` runs all of it).

A finding is ``{"check", "severity", "message", "fix"}`` with severity ``ok``,
``info``, ``warning`` or ``blocker``. Only blockers stop a migration (exit code 4).
"""

import contextlib
import ctypes
import ctypes.util
import email.utils
import math
import os
import re
import textwrap
import time
import urllib.error
import urllib.request

from source_script import excludes
from wire import config as cfg
from wire import osfamily
from wire.config import (  # noqa: F401 - build_plan is part of this module's API
    build_plan,
    default_data_disk_size,
    detect_architecture,
    detect_platform,
)
from wire.errors import CheckFailed
from wire.paths import target_path

GIB = 1024 ** 3
SEVERITIES = ("ok", "info", "warning", "blocker")
MIN_GRUB = (1, 99)
MIN_RSYNC = (3, 0, 0)
GOOD_RSYNC = (3, 1, 0)
# A clock before this is certainly wrong (this tool did not exist yet).
EARLIEST_SANE = 1767225600  # 2026-01-01T00:00:00Z
MAX_SKEW = 900  # seconds; the cloud API refuses requests further off (IllegalTimestamp)
WARN_SKEW = 60
FULL_RATIO = 0.9
GRUB_DOC = "https://partners-intl.aliyun.com/help/doc-detail/62807.html"
VIRTIO_DOC = "https://www.alibabacloud.com/help/doc-detail/62423.htm"
ECS_ENDPOINT = "https://ecs.aliyuncs.com/"

def finding(check, severity, message, fix=None):
    assert severity in SEVERITIES
    return {"check": check, "severity": severity, "message": message, "fix": fix}


def gib(n):
    return "%.1f GiB" % (n / float(GIB))


def version_tuple(text):
    """``'2.02~beta2'`` -> ``(2, 2)``; ``'3.2.7'`` -> ``(3, 2, 7)``; None when there
    is no leading number."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    if not m:
        return None
    return tuple(int(x) for x in m.group(1).split("."))


def _os_name(manifest):
    os_ = manifest.get("os") or {}
    return os_.get("pretty_name") or os_.get("name") or os_.get("id") or "Linux"


# ---------------------------------------------------------------------------- sizes

def disk_usage(config, manifest):
    """Pure: what each target disk must hold, from the manifest's filesystems.

    Returns ``{"used": {"system": bytes, "disk1": bytes}, "parts": {disk: [(mountpoint,
    bytes)]}, "unknown": {disk: [mountpoint]}, "left_out": [(mountpoint, reason)],
    "size": {"disk1": source filesystem size}}``."""
    disks = [d for d in config.data_disks if d.src_path and d.src_path.startswith("/")]
    names = ["system"] + [d.name for d in disks]
    used, parts, unknown = {n: 0 for n in names}, {n: [] for n in names}, {n: [] for n in names}
    left_out, sizes = [], {}
    dropped = [r[:-2] for r in excludes.SYSTEM_DEFAULTS if r.startswith("/") and r.endswith("/*")]
    for fs in manifest.get("filesystems") or []:
        mp = fs.get("mountpoint")
        if fs.get("type") == "swap":
            continue
        if not mp:
            left_out.append((fs.get("device"), "not mounted"))
            continue
        name, rel = excludes.owner(mp, disks)
        if name == "system":
            top = next((t for t in dropped if mp != t and excludes.under(mp, t)), None)
            if top is not None:
                left_out.append((mp, "under %s/*, which the default excludes leave out" % top))
                continue
        if rel == "/" and name != "system":
            sizes[name] = fs.get("size_bytes")
        if fs.get("used_bytes") is None:
            unknown[name].append(mp)
            continue
        used[name] += fs["used_bytes"]
        parts[name].append((mp, fs["used_bytes"]))
    if not any(fs.get("mountpoint") == "/" for fs in manifest.get("filesystems") or []):
        unknown["system"].insert(0, "/")
    return {"used": used, "parts": parts, "unknown": unknown, "left_out": left_out,
            "size": sizes}


def _suggest(used_bytes, lo):
    return max(lo, int(math.ceil(used_bytes * 1.15 / GIB)) + 1)


# ---------------------------------------------------------------------------- evaluate

def evaluate(config, manifest, facts):
    """Pure: every finding for ``config`` on the source described by ``manifest``.

    ``facts``: ``euid``; ``clock`` ``{"now", "synchronized", "reference",
    "reference_source", "reference_error"}``; ``paths`` ``{src_path: {"exists",
    "is_dir"}}``; ``config_mode`` (int or None); ``exclude_notes`` (from
    :func:`source_script.excludes.plan_filters`)."""
    out = []
    out += _check_config(config, facts)
    out += _check_root(facts)
    out += _check_platform(config, manifest)
    out += _check_family(manifest)
    out += _check_arch(config, manifest)
    out += _check_rsync(manifest)
    out += _check_selinux(manifest)
    out += _check_kernels(manifest)
    out += _check_initramfs(manifest)
    out += _check_grub(manifest)
    out += _check_clock(facts.get("clock") or {}, config)
    out += _check_data_disks(config, manifest, facts)
    out += _check_sizes(config, manifest)
    for w in manifest.get("warnings") or []:
        out.append(finding("inventory", "warning", "probe %s: %s" % (w.get("probe"),
                                                                     w.get("message")),
                           "the check is incomplete there"))
    for n in facts.get("exclude_notes") or []:
        out.append(finding("excludes", n["severity"], n["message"]))
    return out


def blocked(findings):
    return any(f["severity"] == "blocker" for f in findings)


def _check_config(config, facts):
    out = []
    mode = "all-in-one (launches the intermediate instance with the AccessKey)" \
        if config.all_in_one else "receiver (started separately; no AccessKey needed)"
    bw = "%d KB/s" % config.bandwidth_limit if config.bandwidth_limit else "none"
    out.append(finding("config", "ok", "image %s, system disk %d GiB, %d data disk%s, "
                       "bandwidth limit %s, mode %s" % (
                           config.image_name, config.system_disk_size,
                           len(config.data_disks), "" if len(config.data_disks) == 1 else "s",
                           bw, mode)))
    perm = facts.get("config_mode")
    if config.secret_key and perm is not None and perm & 0o077 and config.path:
        out.append(finding(
            "config", "warning", "%s holds the AccessKey secret and other users can read it "
            "(mode %s)" % (config.path, oct(perm & 0o777)[-3:]),
            "chmod 600 %s" % config.path))
    return out


def _check_root(facts):
    euid = facts.get("euid")
    if euid == 0:
        return [finding("root", "ok", "running as root")]
    return [finding("root", "blocker", "running as user id %s, not root: files only root "
                    "can read would be left out" % euid,
                    "run it as root: sudo go2aliyun ...")]


def _check_platform(config, manifest):
    detected = detect_platform(manifest)
    name = _os_name(manifest)
    if config.is_windows:
        return [finding(
            "platform", "blocker", "platform %s is a Windows platform, but this source runs "
            "Linux (%s); go2aliyun migrates Linux servers only" % (cfg.show(config.platform),
                                                                   name),
            "set platform to %s (one of %s) or leave it empty to use the detected one"
            % (cfg.show(detected or "Others Linux"),
               " | ".join(p for p in cfg.PLATFORMS if p not in cfg.WINDOWS_PLATFORMS)))]
    if config.platform is None:
        return [finding("platform", "info" if detected else "warning",
                        "platform not set: %s" % ("the detected %s (%s) is used"
                                                  % (cfg.show(detected), name) if detected
                                                  else "the OS could not be detected"),
                        None if detected else "set platform in user_config.json")]
    if detected and config.platform != detected:
        return [finding("platform", "warning", "platform is %s but the source runs %s (%s): "
                        "the image will be labelled %s" % (cfg.show(config.platform),
                                                           name, cfg.show(detected),
                                                           config.platform),
                        "set platform to %s or leave it empty" % cfg.show(detected))]
    return [finding("platform", "ok", "%s (%s)" % (config.platform, name))]


def _check_arch(config, manifest):
    raw = manifest.get("arch")
    detected = detect_architecture(manifest)
    if raw and not detected:
        return [finding("architecture", "blocker", "the source's architecture is %s; allowed: "
                        "i386 | x86_64 sources" % cfg.show(raw),
                        "migrate an i386 or x86_64 server")]
    if config.architecture and detected and config.architecture != detected:
        return [finding("architecture", "blocker", "architecture is %s but the source is %s "
                        "(%s): the image would not boot" % (cfg.show(config.architecture),
                                                            detected, raw),
                        "set architecture to %s or leave it empty" % detected)]
    if not detected:
        if config.architecture:
            return [finding("architecture", "warning",
                            "the source's architecture is unknown; %s as configured"
                            % config.architecture)]
        return [finding("architecture", "warning", "the source's architecture is unknown",
                        "set architecture to i386 or x86_64")]
    return [finding("architecture", "ok" if config.architecture else "info",
                    detected if config.architecture else "not set: the detected %s is used"
                    % detected)]


def _check_family(manifest):
    """A system that no row of the OS-family table takes is refused here, before the
    copy, as the receiver's conversion would refuse it after (same table)."""
    if (manifest.get("os") or {}).get("family") != osfamily.OTHER:
        return []
    return [finding("os", "blocker", "%s is not a Linux family go2aliyun converts (the ID "
                    "and ID_LIKE of /etc/os-release match none of: %s)"
                    % (_os_name(manifest), ", ".join(i for f in osfamily.FAMILIES
                                                     for i in f.ids)),
                    "migrate a Debian/Ubuntu, RHEL-like or SUSE system")]


def _check_rsync(manifest):
    r = manifest.get("rsync") or {}
    family = osfamily.by_name((manifest.get("os") or {}).get("family"))
    install = family.install % "rsync" if family else (
        "install rsync with the package manager (yum/apt-get/zypper install rsync)")
    if not r.get("path"):
        return [finding("rsync", "blocker", "rsync is not installed", install)]
    v = version_tuple(r.get("version"))
    if v is None:
        return [finding("rsync", "warning", "rsync %s: its version is unknown" % r["path"],
                        "make sure `rsync --version` works")]
    if v < MIN_RSYNC:
        return [finding("rsync", "blocker", "rsync %s is too old: ACLs and extended "
                        "attributes (SELinux labels) need 3.0.0 or later" % r["version"],
                        "update rsync: " + install.replace("install", "update", 1)
                        if family else install)]
    if v < GOOD_RSYNC:
        return [finding("rsync", "warning", "rsync %s works, but progress is shown per "
                        "file (total progress needs 3.1.0)" % r["version"])]
    return [finding("rsync", "ok", "rsync %s (%s)" % (r["version"], r["path"]))]


def _check_selinux(manifest):
    mode = (manifest.get("selinux") or {}).get("mode")
    if mode in ("enforcing", "permissive"):
        return [finding("selinux", "info", "SELinux is %s: it can stay on. The files are "
                        "copied with their SELinux labels (rsync -X) and the copy is "
                        "relabelled on first boot where needed, so the seed's advice to "
                        "disable SELinux (setenforce 0) is not needed here" % mode)]
    return [finding("selinux", "ok", "SELinux is %s" % (mode or "unknown"))]


def _check_kernels(manifest):
    kernels = manifest.get("kernels") or []
    if not kernels:
        return [finding("kernels", "blocker", "no kernel was found in /boot of the source",
                        "install the distribution's kernel package")]
    out = []
    for k in kernels:
        virtio = k.get("virtio") or {}
        missing = [d for d in osfamily.CHECKED_DRIVERS if virtio.get(d) == "missing"]
        if missing:
            out.append(finding(
                "virtio", "blocker", "kernel %s has no %s (neither a module nor built in): "
                "it cannot boot on ECS" % (k.get("version"), ", ".join(missing)),
                "install the virtio drivers (%s), e.g. install the distribution's current "
                "kernel, or remove kernel %s" % (VIRTIO_DOC, k.get("version"))))
    if not out:
        out.append(finding("virtio", "ok", "virtio_blk, virtio_pci and virtio_net present "
                           "in every kernel (%s)" % ", ".join(k.get("version") or "?"
                                                              for k in kernels)))
    return out


def _check_initramfs(manifest):
    """The receiver rebuilds every initramfs with the tool the source has installed
    (found by its programs, wire.osfamily.INITRAMFS_TOOLS); one it does not run is
    refused here, before the copy, as the conversion would refuse it after."""
    tool = manifest.get("initramfs_tool")
    known = " or ".join(osfamily.CONVERTED_INITRAMFS_TOOLS)
    if tool in osfamily.CONVERTED_INITRAMFS_TOOLS:
        return [finding("initramfs", "ok", "initramfs built by %s" % tool)]
    if tool is None:
        return [finding("initramfs", "blocker", "no initramfs tool is installed (none of "
                        "update-initramfs with mkinitramfs, dracut, mkinitcpio, mkinitrd)",
                        "install %s with the distribution's package manager" % known)]
    return [finding("initramfs", "blocker", "the initramfs is built by %s, which go2aliyun "
                    "cannot run to add the virtio drivers" % tool,
                    "switch the system to %s (its initramfs must hold the virtio drivers) "
                    "and check again" % known)]


def _check_grub(manifest):
    g = manifest.get("grub") or {}
    flavour = g.get("flavour")
    version = g.get("version")
    if flavour == "legacy":
        return [finding("grub", "blocker", "legacy GRUB %s is installed; the copy needs GRUB 2 "
                        "(1.99 or later) to boot on ECS" % (version or ""),
                        "update the boot loader to GRUB 2 first: %s" % GRUB_DOC)]
    if flavour in (None, "none"):
        return [finding("grub", "blocker", "no GRUB boot loader was found",
                        "install GRUB 2 (grub2-pc / grub-pc, or the EFI package) first")]
    v = version_tuple(version)
    if v is None:
        return [finding("grub", "warning", "GRUB 2 of unknown version (%s)"
                        % (g.get("config_path") or "no grub.cfg"),
                        "make sure it is 1.99 or later")]
    if v < MIN_GRUB:
        return [finding("grub", "blocker", "GRUB %s is older than 1.99" % version,
                        "update the boot loader to GRUB 1.99 or later: %s" % GRUB_DOC)]
    return [finding("grub", "ok", "GRUB %s%s" % (
        version, " (%s)" % g["config_path"] if g.get("config_path") else ""))]


def _check_clock(clock, config):
    out = []
    now = clock.get("now")
    if now is None:
        return [finding("clock", "warning", "the clock could not be read")]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if now < EARLIEST_SANE:
        return [finding("clock", "blocker", "the system clock says %s, which is in the past"
                        % stamp, "set the time (chronyd, ntpdate or date -s) and enable NTP")]
    ref = clock.get("reference")
    if ref is not None:
        skew = now - ref
        if abs(skew) > MAX_SKEW:
            out.append(finding(
                "clock", "blocker", "the system clock is %d s %s %s; the cloud API refuses "
                "requests more than %d s off (IllegalTimestamp)" % (
                    abs(skew), "ahead of" if skew > 0 else "behind",
                    clock.get("reference_source") or "the reference", MAX_SKEW),
                "synchronize the clock (chronyc makestep, ntpdate) and enable NTP"))
        elif abs(skew) > WARN_SKEW:
            out.append(finding("clock", "warning", "the system clock is %d s off %s"
                               % (abs(skew), clock.get("reference_source")),
                               "enable NTP (chronyd or ntpd)"))
    elif clock.get("reference_error") and config.all_in_one:
        out.append(finding("clock", "warning", "could not compare the clock with %s: %s"
                           % (clock.get("reference_source"), clock["reference_error"]),
                           "the all-in-one mode needs %s reachable" % ECS_ENDPOINT))
    if clock.get("synchronized") is False:
        out.append(finding("clock", "warning", "the clock is not synchronized with NTP "
                           "(log times and API signatures depend on it)",
                           "enable NTP (chronyd, ntpd or systemd-timesyncd)"))
    if not out:
        out.append(finding("clock", "ok", stamp + (", NTP synchronized"
                                                   if clock.get("synchronized") else "")))
    return out


def _check_data_disks(config, manifest, facts):
    out = []
    if not config.data_disks:
        return out
    drive_letters = [d.src_path for d in config.data_disks
                     if d.src_path and not d.src_path.startswith("/")]
    if drive_letters:
        out.append(finding("data disks", "blocker", "src_path %s %s; this source runs Linux"
                           % (", ".join(drive_letters),
                              "is a Windows drive letter" if len(drive_letters) == 1
                              else "are Windows drive letters"),
                           "give the mount point of each data disk, such as /mnt/disk1"))
    # the last mount on a path is the visible one
    mounts = {m["mountpoint"]: m for m in manifest.get("mounts") or [] if m.get("mountpoint")}
    paths = facts.get("paths") or {}
    for i, d in enumerate(config.data_disks):
        if not d.src_path or not d.src_path.startswith("/"):
            continue
        field = "data_disks[%d].src_path" % i
        p = paths.get(d.src_path)
        if p is not None and not p.get("exists"):
            out.append(finding("data disks", "blocker", "%s %s does not exist on this server"
                               % (field, cfg.show(d.src_path)),
                               "give the folder where the data disk is mounted, or remove "
                               "the entry"))
            continue
        if p is not None and not p.get("is_dir"):
            out.append(finding("data disks", "blocker", "%s %s is not a folder"
                               % (field, cfg.show(d.src_path)),
                               "give the folder where the data disk is mounted"))
            continue
        m = mounts.get(d.src_path)
        if m is None:
            out.append(finding("data disks", "blocker", "%s %s is not a mount point: a data "
                               "disk must be a mounted filesystem (its files are otherwise "
                               "part of the system disk)" % (field, cfg.show(d.src_path)),
                               "mount the data disk there, or remove the entry (the folder "
                               "then goes with the system disk)"))
            continue
        if excludes.is_pseudo(m):
            out.append(finding("data disks", "blocker", "%s %s is a %s filesystem, whose "
                               "content is never copied" % (field, cfg.show(d.src_path),
                                                           m.get("fstype")),
                               "give the mount point of a real disk"))
            continue
        out.append(finding("data disks", "ok", "disk %d: %s (%s %s)" % (
            d.index, d.src_path, m.get("fstype"), m.get("source"))))
    return out


def _check_sizes(config, manifest):
    out = []
    u = disk_usage(config, manifest)
    what = [("system", "system_disk_size", config.system_disk_size, cfg.SYSTEM_DISK_GIB,
             excludes.SYSTEM_FILE)]
    mounted = set(m.get("mountpoint") for m in manifest.get("mounts") or [])
    fs_at = set(fs.get("mountpoint") for fs in manifest.get("filesystems") or [])
    for i, d in enumerate(config.data_disks):
        if d.src_path and d.src_path.startswith("/"):
            if d.src_path not in mounted:
                continue  # not a mount point: a blocker of _check_data_disks
            if d.src_path not in fs_at:
                u["unknown"][d.name].insert(0, d.src_path)
            size = d.size_gib
            if size is None:
                size = default_data_disk_size(u["size"].get(d.name))
                if size is None:
                    out.append(finding("sizes", "blocker", "data_disks[%d].data_disk_size is "
                                       "not set and the size of %s is unknown"
                                       % (i, d.src_path),
                                       "set data_disks[%d].data_disk_size (GiB, 20-32768)" % i))
                    continue
                out.append(finding("sizes", "info", "data_disks[%d].data_disk_size not set: "
                                   "disk %d will be %d GiB, as large as %s"
                                   % (i, d.index, size, d.src_path)))
            what.append((d.name, "data_disks[%d].data_disk_size" % i, size, cfg.DATA_DISK_GIB,
                         excludes.DISK_FILE % d.index))
    for name, field, size_gib, bounds, exfile in what:
        used = u["used"].get(name, 0)
        detail = ", ".join("%s %s" % (mp, gib(b)) for mp, b in u["parts"].get(name, []))
        for mp in u["unknown"].get(name, []):
            out.append(finding("sizes", "warning", "the used space of %s is unknown: make sure "
                               "%s (%d GiB) can hold it" % (mp, field, size_gib)))
        size_b = size_gib * GIB
        if used >= size_b:
            need = _suggest(used, bounds[0])
            fix = ("set %s to at least %d (GiB, %d-%d)" % (field, need, bounds[0], bounds[1])
                   if need <= bounds[1] else
                   "move data to data disks (%d GiB is the most)" % bounds[1])
            out.append(finding("sizes", "blocker", "%s is %d GiB but the files to copy use %s "
                               "(%s)" % (field, size_gib, gib(used), detail or "-"),
                               fix + ", or leave folders out in Excludes/" + exfile))
        elif used > FULL_RATIO * size_b:
            out.append(finding("sizes", "warning", "%s is %d GiB and the files to copy use %s "
                               "(%s): little room is left" % (field, size_gib, gib(used),
                                                              detail or "-"),
                               "set %s to at least %d" % (field, _suggest(used, bounds[0]))))
        else:
            out.append(finding("sizes", "ok", "%s %d GiB holds %s (%s)" % (
                field, size_gib, gib(used), detail or "nothing")))
    for where, reason in u["left_out"]:
        out.append(finding("sizes", "info", "%s is not migrated: %s" % (where, reason),
                           "to keep its files, mount it and add it as a data disk"))
    return out


# ---------------------------------------------------------------------------- probes

class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> (Linux); only `modes` and the return value matter,
    # the kernel writes the rest. Padding keeps the size generous.
    _fields_ = [("modes", ctypes.c_uint), ("rest", ctypes.c_long * 64)]


TIME_ERROR = 5


def probe_ntp_synchronized():
    """True/False from the kernel's NTP state (adjtimex, read only; what timedatectl
    shows as "System clock synchronized"), None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def parse_http_date(value):
    """``'Thu, 26 Nov 2026 15:00:00 GMT'`` -> epoch seconds, or None."""
    try:
        t = email.utils.parsedate_tz(value or "")
        return float(email.utils.mktime_tz(t)) if t else None
    except (TypeError, ValueError, OverflowError):
        return None


def probe_reference_time(url=ECS_ENDPOINT, timeout=5):
    """Ask ``url`` for its ``Date``. Returns ``(epoch or None, error or None)``."""
    if not url.startswith("https://"):
        raise ValueError("reference time URL must be https: %r" % url)
    req = urllib.request.Request(url, method="HEAD")  # noqa: S310 - https only (above)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310
        date = resp.headers.get("Date")
    except urllib.error.HTTPError as e:  # any answer carries the server's time
        date = e.headers.get("Date") if e.headers else None
    except (urllib.error.URLError, OSError) as e:
        return None, str(getattr(e, "reason", e))
    t = parse_http_date(date)
    return t, (None if t is not None else "no Date header")


def probe_facts(config, root, config_path=None):
    """Probe what :func:`evaluate` needs beyond the manifest."""
    clock = {"now": time.time(), "synchronized": probe_ntp_synchronized(),
             "reference": None, "reference_source": None, "reference_error": None}
    if config.all_in_one:
        clock["reference_source"] = ECS_ENDPOINT
        clock["reference"], clock["reference_error"] = probe_reference_time()
    paths = {}
    for d in config.data_disks:
        if d.src_path and d.src_path.startswith("/"):
            p = target_path(root, d.src_path)
            paths[d.src_path] = {"exists": os.path.lexists(p), "is_dir": os.path.isdir(p)}
    mode = None
    if config_path:
        with contextlib.suppress(OSError):
            mode = os.stat(config_path).st_mode & 0o777
    return {"euid": os.geteuid(), "clock": clock, "paths": paths, "config_mode": mode}


# ---------------------------------------------------------------------------- rendering

def failure(report):
    """The :class:`CheckFailed` for a report with blockers."""
    blockers = [f for f in report["findings"] if f["severity"] == "blocker"]
    return CheckFailed(
        "%d problem%s block%s the migration: %s" % (
            len(blockers), "" if len(blockers) == 1 else "s", "s" if len(blockers) == 1 else "",
            "; ".join("%s: %s" % (f["check"], f["message"]) for f in blockers)),
        hint="fix them and run go2aliyun check again")


LABEL = {"ok": "ok", "info": "info", "warning": "WARNING", "blocker": "BLOCKER"}


def render_table(report, width=100):
    """The report for people: one row per finding, the fix under it, then the filters."""
    rows = [("CHECK", "RESULT", "DETAIL")]
    for f in report["findings"]:
        rows.append((f["check"], LABEL[f["severity"]], f["message"]))
        if f.get("fix"):
            rows.append(("", "", "fix: " + f["fix"]))
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    wrap = max(30, width - w1 - w2 - 4)
    lines = []
    for a, b, c in rows:
        chunks = textwrap.wrap(c, wrap) or [""]
        lines.append("%-*s  %-*s  %s" % (w1, a, w2, b, chunks[0]))
        for more in chunks[1:]:
            lines.append("%-*s  %-*s  %s" % (w1, "", w2, "", more))
    lines.append("")
    for disk, rules in report["filters"].items():
        lines.append("rsync filter rules of %s (first match wins):" % disk)
        lines.extend("  " + r for r in rules)
    n_block = sum(1 for f in report["findings"] if f["severity"] == "blocker")
    n_warn = sum(1 for f in report["findings"] if f["severity"] == "warning")
    lines.append("")
    if n_block:
        lines.append("%d blocker%s, %d warning%s: the migration cannot start." % (
            n_block, "" if n_block == 1 else "s", n_warn, "" if n_warn == 1 else "s"))
    else:
        lines.append("Nothing blocks the migration (%d warning%s)." % (
            n_warn, "" if n_warn == 1 else "s"))
    return "\n".join(lines)
