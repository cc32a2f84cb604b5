"""Paths of the copy resolved INSIDE it, the way the copy's own programs would see them.

:func:`wire.paths.target_path` joins text: ``<root>/etc/fstab`` still goes wherever a
symlink ``etc -> /etc`` of the copy points, which is the RECEIVER's ``/etc``. The
conversion reads and writes the copy as root, so every path of it goes through
:func:`in_root`: each component is looked at with ``lstat`` (never followed by the
system); a symlink's target is read and walked the same way, an absolute one from the
copy's root (``etc/resolv.conf -> /run/...`` lands in ``<root>/run/...``), and one that
would climb above the root is refused with ``conversion.unsafe_path``.

No other process writes the copy while the receiver converts it: the data is in, and the
copy's own tools run in a sandbox whose processes are all gone when the command returns
(:mod:`receiver.convert.chroot`), so a path resolved here stays what it was.
"""

import errno
import os
import stat

from wire.errors import ConversionError

MAX_LINKS = 40  # as the kernel's ELOOP limit


def _unsafe(rel, why):
    return ConversionError(
        "%s in the migrated system %s: refusing to convert it" % (rel, why),
        code="conversion.unsafe_path", path=rel,
        hint="a symlink of the copy points outside it; the receiver would read or write "
        "its own files. Fix the link on the source and migrate again")


def in_root(root, *parts, follow=True):
    """The receiver's path of ``parts`` (joined, absolute taken from ``root``) in the copy
    at ``root``, every symlink resolved inside ``root``.

    ``follow=False`` leaves the last component as it is (to rename or remove a symlink
    itself). A part that does not exist is kept as written (a file to create). Raises
    ConversionError ``conversion.unsafe_path`` for a path that leaves ``root``.
    """
    root = os.path.abspath(root or "/")
    rel = "/" + "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    todo = [c for c in rel.split("/") if c not in ("", ".")]
    todo.reverse()  # a stack: the next component last
    done = []  # resolved components below root
    links = 0
    missing = False
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not done:
                raise _unsafe(rel, "climbs above its root")
            done.pop()
            continue
        if missing or (not follow and not todo):
            done.append(name)
            continue
        here = os.path.join(root, *(done + [name]))
        try:
            st = os.lstat(here)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
            missing = True
            done.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode):
            done.append(name)
            continue
        links += 1
        if links > MAX_LINKS:
            raise _unsafe(rel, "has too many levels of symlinks")
        target = os.readlink(here)
        if target.startswith("/"):
            done = []
        todo.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
    return os.path.join(root, *done) if done else root


def read_text(root, *parts):
    """Text of a file of the copy (surrogateescape), or None when it is not a file."""
    p = in_root(root, *parts)
    if not os.path.isfile(p):
        return None
    with open(p, errors="surrogateescape") as f:
        return f.read()


__all__ = ["in_root", "read_text", "MAX_LINKS"]
