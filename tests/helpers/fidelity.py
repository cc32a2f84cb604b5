"""Compare a source tree with its copy: the proof that a push kept everything.

:func:`snapshot` records, per relative path: type, mode (with setuid/setgid/sticky),
numeric owner, size, SHA-256 of the content, symlink target, mtime (ns for files,
seconds for the rest: rsync's own precision), every
xattr (POSIX ACLs are the ``system.posix_acl_*`` xattrs), allocated bytes and the
hard-link group. :func:`compare` lists every difference: missing, extra, changed
fields, hard-link groups split or merged, a sparse file that got filled, and paths
that should have been excluded but arrived. An empty list means a faithful copy.
"""

import fnmatch
import hashlib
import os
import stat

# Slack for "still sparse": the copy may allocate a little more than the source.
SPARSE_SLACK = 256 * 1024


def _kind(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "link"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "?"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path):
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            out[n] = None
    return out


def excluded(rel, patterns):
    return any(fnmatch.fnmatchcase(rel, pat) for pat in patterns)


def snapshot(root, skip=()):
    """{relpath: record} for everything under ``root`` (``.`` is the root itself),
    leaving out paths matching the ``skip`` patterns (fnmatch, ``*`` crosses ``/``)."""
    entries = {}
    inodes = {}
    todo = ["."]
    while todo:
        rel = todo.pop()
        path = os.path.normpath(os.path.join(root, rel))
        st = os.lstat(path)
        kind = _kind(st.st_mode)
        rec = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
               "gid": st.st_gid, "xattrs": _xattrs(path)}
        # rsync keeps nanoseconds for regular files; for folders, symlinks and specials
        # it compares (and so keeps) whole seconds
        rec["mtime"] = st.st_mtime_ns if kind == "file" else int(st.st_mtime)
        if kind == "file":
            rec["size"] = st.st_size
            rec["sha256"] = _sha256(path)
            rec["allocated"] = st.st_blocks * 512
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        elif kind == "link":
            rec["target"] = os.readlink(path)
        elif kind in ("chr", "blk"):
            rec["rdev"] = st.st_rdev
        elif kind == "dir":
            for name in sorted(os.listdir(path)):
                child = name if rel == "." else rel + "/" + name
                if not excluded(child, skip):
                    todo.append(child)
        entries[rel] = rec
    groups = set(frozenset(v) for v in inodes.values() if len(v) > 1)
    return entries, groups


def compare(src, dst, excluded_patterns=(), devices_excluded=True, ignore_extra=(),
            check_dir_mtime=True):
    """Differences between the tree at ``src`` and its copy at ``dst`` (a list of
    strings; empty when faithful). ``excluded_patterns`` must be absent from ``dst``
    (and are not expected from ``src``); device nodes too unless
    ``devices_excluded`` is False; ``ignore_extra`` patterns may exist in ``dst``."""
    problems = []
    s_entries, s_groups = snapshot(src, skip=excluded_patterns)
    d_entries, d_groups = snapshot(dst, skip=ignore_extra)
    for rel in sorted(set(d_entries) - set(s_entries)):
        if excluded(rel, excluded_patterns):
            problems.append("excluded but arrived: %r" % rel)
        else:
            problems.append("extra in copy: %r" % rel)
    for rel in sorted(s_entries):
        s = s_entries[rel]
        if devices_excluded and s["kind"] in ("chr", "blk"):
            if rel in d_entries:
                problems.append("device node arrived: %r" % rel)
            continue
        d = d_entries.get(rel)
        if d is None:
            problems.append("missing in copy: %r (%s)" % (rel, s["kind"]))
            continue
        for key in ("kind", "mode", "uid", "gid", "size", "sha256", "target", "rdev",
                    "xattrs", "mtime"):
            if key == "mtime" and s["kind"] == "dir" and not check_dir_mtime:
                continue
            if s.get(key) != d.get(key):
                problems.append("%s differs for %r: %r != %r" % (key, rel, s.get(key),
                                                                d.get(key)))
        sparse = s["kind"] == "file" and s["allocated"] + SPARSE_SLACK < s["size"]
        if sparse and d.get("allocated", 0) > s["allocated"] + SPARSE_SLACK:
            problems.append("sparse file filled in copy: %r (%d bytes allocated, source "
                            "%d)" % (rel, d["allocated"], s["allocated"]))
    if s_groups != d_groups:
        problems.append("hard-link groups differ: source %s, copy %s"
                        % (sorted(sorted(g) for g in s_groups),
                           sorted(sorted(g) for g in d_groups)))
    return problems
