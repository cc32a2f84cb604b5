"""``Excludes/``: the exact rsync filter rules of every target disk.

The seed's rules (Step 3):

* ``Excludes/rsync_excludes_linux.txt`` lists paths to leave out of the system disk;
  ``Excludes/rsync_excludes_linux_disk<N>.txt`` those of data disk N, written relative
  to that disk's ``src_path`` (``/mnt/disk1/mydirs/x`` is written ``/mydirs/x``).
* The defaults ``/dev/*``, ``/sys/*``, ``/proc/*``, ``/media/*``, ``lost+found/*``,
  ``/mnt/*`` and ``/var/lib/lxcfs/*`` are always left out of the system disk (and
  ``/run/*``, ``/tmp/*``).

And ours, which nobody can override (they come first; rsync takes the first rule that
matches):

* the data disks' mount points are emptied on the system disk (the folder stays, to
  mount the disk on), also when they sit under a default exclude such as ``/mnt/*``;
* pseudo filesystems (proc, sysfs, tmpfs, cgroup, overlay, squashfs...) and swap files
  are never copied;
* the work folder's ``user_config.json`` (it holds the AccessKey secret),
  ``client_data`` and ``logs/`` stay behind when they lie inside the migrated system.

The result is ``{"system": [...], "disk1": [...]}``: rsync filter rules (``- PATTERN``
or ``+ PATTERN``) in order, ready for ``rsync --filter=RULE``. Each rule's paths are
anchored at the root of what that disk copies (``/`` or the ``--root`` folder for the
system disk, ``src_path`` for a data disk).

Reading the files is :func:`read_user_excludes`; everything else is pure.
"""

import os
import posixpath
import re

from wire.osfamily import PSEUDO_FSTYPES  # never copied, whatever the manifest says

EXCLUDES_DIR = "Excludes"
SYSTEM_FILE = "rsync_excludes_linux.txt"
DISK_FILE = "rsync_excludes_linux_disk%d.txt"
_DISK_FILE_RE = re.compile(r"^rsync_excludes_linux_disk(\d+)\.txt$", re.I)

# The seed's defaults, in the seed's order, then ours.
SEED_DEFAULTS = ("/dev/*", "/sys/*", "/proc/*", "/media/*", "lost+found/*", "/mnt/*",
                 "/var/lib/lxcfs/*")
EXTRA_DEFAULTS = ("/run/*", "/tmp/*")
SYSTEM_DEFAULTS = SEED_DEFAULTS + EXTRA_DEFAULTS
DATA_DISK_DEFAULTS = ("lost+found/*",)

TEMPLATE_TEXT = """\
# Paths to leave out of the SYSTEM disk, one per line, as rsync patterns anchored at /:
#   /var/mydirs/docs/words/
#   /var/mydirs/docs/excels/report1.sh
# For data disk N write Excludes/rsync_excludes_linux_disk<N>.txt, with paths relative
# to that disk's src_path (/mnt/disk1/mydirs/x is written /mydirs/x).
# Always left out: /dev/* /sys/* /proc/* /media/* lost+found/* /mnt/* /var/lib/lxcfs/*
# /run/* /tmp/*, pseudo filesystems and swap files. Lines starting with # are comments;
# a line starting with "+ " or "- " is passed to rsync as a filter rule unchanged.
"""


def _note(severity, message, source=None):
    note = {"severity": severity, "message": message}
    if source:
        note["source"] = source
    return note


# ---------------------------------------------------------------------------- reading

def parse_exclude_text(text):
    """Pure: the rules of one exclude file as ``[(line_number, rule), ...]``.

    Blank lines and lines starting with ``#`` or ``;`` are skipped (as rsync does);
    ``+ x`` and ``- x`` lines are kept as they are; any other line ``p`` becomes
    ``- p``. Surrounding blanks and Windows line ends are dropped."""
    rules = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line[:2] in ("+ ", "- "):
            rules.append((n, line[0] + " " + line[2:].strip()))
        else:
            rules.append((n, "- " + line))
    return rules


def find_exclude_files(excludes_dir):
    """``{"system": path, 1: path, 2: path...}`` for the files present in
    ``excludes_dir``, plus notes about names that only match ignoring case."""
    found, notes = {}, []
    try:
        names = sorted(os.listdir(excludes_dir))
    except FileNotFoundError:
        return found, notes
    candidates = {}
    for name in names:
        if name.lower() == SYSTEM_FILE:
            key = "system"
        else:
            m = _DISK_FILE_RE.match(name)
            if not m:
                continue
            key = int(m.group(1))
        candidates.setdefault(key, []).append(name)
    for key, found_names in candidates.items():
        expected = SYSTEM_FILE if key == "system" else DISK_FILE % key
        chosen = expected if expected in found_names else found_names[0]
        found[key] = os.path.join(excludes_dir, chosen)
        if chosen != expected:
            notes.append(_note("info", "%s is read although the expected name is %s"
                               % (found[key], expected)))
        for other in found_names:
            if other != chosen:
                notes.append(_note("warning", "%s is ignored: %s is used"
                                   % (os.path.join(excludes_dir, other), found[key])))
    return found, notes


def read_user_excludes(excludes_dir, disk_indexes):
    """Probe: read the exclude files of the system disk and of the data disks with
    ``disk_indexes``. Returns ``(user_rules, notes)`` with ``user_rules`` as
    ``{"system": [(file, line, rule)...], "disk1": [...]}``."""
    found, notes = find_exclude_files(excludes_dir)
    user = {"system": []}
    for i in disk_indexes:
        user["disk%d" % i] = []
    for key, path in sorted(found.items(), key=lambda kv: str(kv[0])):
        name = "system" if key == "system" else "disk%d" % key
        if name not in user:
            notes.append(_note("warning", "%s is ignored: there is no data disk with "
                               "data_disk_index %s in the configuration" % (path, key)))
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        user[name] = [(path, n, rule) for n, rule in parse_exclude_text(text)]
    return user, notes


# ---------------------------------------------------------------------------- planning

def escape(path):
    """Quote rsync's wildcard characters in a literal path (only needed, and only
    understood by rsync, when the pattern holds a wildcard)."""
    if not any(c in path for c in "*?["):
        return path
    return re.sub(r"([*?\[\\])", r"\\\1", path)


def _norm(path):
    path = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if path in ("/", "//") else path


def under(path, top):
    """True when ``path`` is ``top`` or lies inside it."""
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def owner(path, data_disks):
    """The disk that copies ``path``: ``("diskN", path relative to src_path)`` or
    ``("system", path)``; the longest ``src_path`` wins."""
    best = None
    for d in data_disks:
        if d.src_path and under(path, d.src_path) and (
                best is None or len(d.src_path) > len(best.src_path)):
            best = d
    if best is None:
        return "system", path
    rel = path[len(best.src_path.rstrip("/")):] or "/"
    return best.name, rel


def _covered(path, rules):
    """True when an earlier ``- X/*`` rule already drops ``path`` (X an ancestor)."""
    for rule in rules:
        if rule.startswith("- ") and rule.endswith("/*"):
            top = rule[2:-2]
            if "\\" not in top and path != top and under(path, top):
                return True
    return False


def is_pseudo(mount):
    return bool(mount.get("pseudo")) or mount.get("fstype") in PSEUDO_FSTYPES


def plan_filters(data_disks, manifest=None, user_rules=None, protect=()):
    """Pure: the filter rules of every disk.

    ``data_disks``: the config's :class:`~wire.config.DataDisk` list;
    ``manifest``: the inventory (mounts and swap are read); ``user_rules``: from
    :func:`read_user_excludes`; ``protect``: absolute paths in the migrated system that
    must stay behind (the work folder's secrets), a trailing ``/`` for a folder.

    Returns ``(filters, notes)``."""
    manifest = manifest or {}
    user_rules = user_rules or {}
    disks = sorted((d for d in data_disks if d.src_path and d.src_path.startswith("/")),
                   key=lambda d: d.index)
    names = ["system"] + [d.name for d in disks]
    protected = {n: [] for n in names}
    notes = []

    def add(name, rule):
        if rule not in protected[name]:
            protected[name].append(rule)

    # 1. the work folder's files
    for p in protect:
        folder = p.endswith("/")
        name, rel = owner(_norm(p), disks)
        defaults_here = SYSTEM_DEFAULTS if name == "system" else DATA_DISK_DEFAULTS
        if rel != "/" and not _covered(rel, ["- " + r for r in defaults_here]):
            add(name, "- " + escape(rel) + ("/" if folder else ""))

    # 2. data disk mount points: empty on the system disk, the folder kept
    keep_dirs, ancestors = [], []
    for d in disks:
        keep_dirs.append(d.src_path)
        for default in SYSTEM_DEFAULTS:
            top = default[:-2]
            if default.startswith("/") and d.src_path != top and under(d.src_path, top):
                a = posixpath.dirname(d.src_path)
                while a != top and a not in ancestors and a != "/":
                    ancestors.append(a)
                    a = posixpath.dirname(a)
    for p in keep_dirs:
        add("system", "- %s/*" % escape(p))
        add("system", "+ %s/" % escape(p))
    ancestors.sort(key=lambda a: -a.count("/"))
    for a in ancestors:
        add("system", "+ %s/" % escape(a))
    for a in ancestors:
        add("system", "- %s/*" % escape(a))

    # 3. pseudo filesystems and swap files
    defaults = {"system": ["- " + r for r in SYSTEM_DEFAULTS]}
    for d in disks:
        defaults[d.name] = ["- " + r for r in DATA_DISK_DEFAULTS]
    for m in sorted(manifest.get("mounts") or [], key=lambda m: m.get("mountpoint") or ""):
        mp = m.get("mountpoint")
        if not mp or not is_pseudo(m):
            continue
        mp = _norm(mp)
        if mp == "/":
            notes.append(_note("warning", "/ is a %s filesystem (a container?): it is copied "
                               "as it is" % m.get("fstype")))
            continue
        name, rel = owner(mp, disks)
        if rel == "/":
            continue  # a data disk on a pseudo filesystem: check.py refuses it
        rule = "- %s/*" % escape(rel)
        if rule in defaults[name] or _covered(rel, protected[name] + defaults[name]):
            continue
        add(name, rule)
    for s in manifest.get("swap") or []:
        if s.get("kind") == "file" and s.get("path"):
            name, rel = owner(_norm(s["path"]), disks)
            if not _covered(rel, protected[name] + defaults[name]):
                add(name, "- " + escape(rel))

    # 4. the user's files, then 5. the defaults
    filters = {}
    for name in names:
        rules = list(protected[name])
        disk = next((d for d in disks if d.name == name), None)
        for item in user_rules.get(name, ()):
            source, line, rule = item if len(item) == 3 else (None, item[0], item[1])
            where = "%s line %s" % (source or name, line)
            pattern = rule[2:]
            if name == "system":
                for d in disks:
                    if pattern.startswith("/") and under(_norm(pattern), d.src_path):
                        notes.append(_note(
                            "warning", "%s: %s lies on data disk %d (%s), which the system "
                            "disk does not copy; write it in %s as %s" % (
                                where, pattern, d.index, d.src_path, DISK_FILE % d.index,
                                pattern[len(d.src_path):] or "/"), where))
            elif disk is not None and pattern.startswith(disk.src_path.rstrip("/") + "/"):
                notes.append(_note(
                    "warning", "%s: %s starts with the data disk's src_path %s, but paths "
                    "in this file are relative to it (write %s); as written it matches "
                    "nothing" % (where, pattern, disk.src_path, pattern[len(disk.src_path):]),
                    where))
            if rule not in rules:
                rules.append(rule)
        for rule in defaults[name]:
            if rule not in rules:
                rules.append(rule)
        filters[name] = rules
    return filters, notes


def protect_paths(root, workdir, config_path):
    """The work folder's files that lie inside the migrated system (``root``), as
    absolute paths in that system: ``user_config.json`` (or ``--config``),
    ``client_data`` and ``logs/``."""
    root = os.path.realpath(root or "/")
    out = []
    candidates = []
    if config_path:
        candidates.append((config_path, False))
    if workdir:
        candidates += [(os.path.join(workdir, "user_config.json"), False),
                       (os.path.join(workdir, "client_data"), False),
                       (os.path.join(workdir, "logs"), True)]
    for path, folder in candidates:
        real = os.path.realpath(path)
        if real == root or not under(real, root):
            continue
        rel = "/" + os.path.relpath(real, root) if root != "/" else real
        rel = _norm(rel) + ("/" if folder else "")
        if rel not in out:
            out.append(rel)
    return out


def write_template(excludes_dir):
    """Create ``Excludes/rsync_excludes_linux.txt`` with its explanation, unless it is
    there. Returns True when written."""
    os.makedirs(excludes_dir, exist_ok=True)
    path = os.path.join(excludes_dir, SYSTEM_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(TEMPLATE_TEXT)
    return True
