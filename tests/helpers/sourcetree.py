"""A source tree holding every kind of file a migration must carry over.

:func:`build` writes it under ``root`` (which plays the source's ``/``) and returns a
:class:`Tree` describing what must arrive and what must not (device nodes, the seed's
default excludes, a user exclude). Needs root: owners, device nodes, trusted.* xattrs.

Kinds: regular, empty, large sparse, hard links (also across folders), symlinks
(absolute, relative, dangling, to a folder), fifos, device nodes (must be excluded),
POSIX ACLs (access and default), xattrs (``user.*`` incl. a SELinux-like label,
``trusted.*``), odd names (spaces, a newline, UTF-8, leading dashes), mode 0,
setuid/setgid/sticky bits, owners with and without a passwd entry, old mtimes.
"""

import os

from wire import runner

OLD = 1000000000  # 2001-09-09
OLDER = 315532800  # 1980-01-01
SELINUX_LIKE = b"system_u:object_r:etc_t:s0"

# The seed's default excludes for Linux (and what they leave behind: the folder itself).
DEFAULT_EXCLUDED = ["dev/*", "proc/*", "sys/*", "media/*", "mnt/*", "var/lib/lxcfs/*"]
USER_EXCLUDE_RULE = "/var/cache/skipme/"
USER_EXCLUDED = ["var/cache/skipme"]


class Tree(object):
    def __init__(self, root):
        self.root = root
        self.devices = []  # relative paths of device nodes (must not arrive)
        self.excluded = list(DEFAULT_EXCLUDED) + [p for p in USER_EXCLUDED] + \
            [p + "/*" for p in USER_EXCLUDED]
        self.kinds = set()


def _write(path, data, mode=0o644):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def build(root):
    """Write the tree under ``root``; return the :class:`Tree`."""
    t = Tree(root)

    def p(*parts):
        return os.path.join(root, *parts)

    # regular, empty, sparse
    _write(p("etc", "hostname"), b"source-host\n")
    _write(p("etc", "fstab"), b"UUID=1234 / ext4 defaults 0 1\n")
    _write(p("data", "regular.bin"), os.urandom(1024 * 1024 + 17))
    _write(p("data", "empty"), b"")
    with open(p("data", "sparse.img"), "wb") as f:
        f.write(b"head" * 1024)
        f.seek(8 * 1024 * 1024)
        f.write(b"middle" * 512)
        f.truncate(16 * 1024 * 1024)
    t.kinds.update(["regular", "empty", "sparse"])

    # hard links
    _write(p("data", "hl", "a"), b"linked content\n" * 100)
    os.link(p("data", "hl", "a"), p("data", "hl", "b"))
    os.makedirs(p("other"))
    os.link(p("data", "hl", "a"), p("other", "c"))
    t.kinds.add("hardlink")

    # symlinks
    os.makedirs(p("links"))
    os.symlink("/data/regular.bin", p("links", "abs"))
    os.symlink("../data/empty", p("links", "rel"))
    os.symlink("/nonexistent/target", p("links", "dangling"))
    os.symlink("../data", p("links", "dir"))
    os.lchown(p("links", "rel"), 4242, 4343)
    t.kinds.add("symlink")

    # specials: a fifo arrives, device nodes do not
    os.makedirs(p("special"))
    os.mkfifo(p("special", "fifo"), 0o640)
    os.mknod(p("special", "chr"), 0o600 | 0o020000, os.makedev(1, 3))
    os.mknod(p("special", "blk"), 0o600 | 0o060000, os.makedev(7, 200))
    t.devices += ["special/chr", "special/blk"]
    t.kinds.update(["fifo", "device"])

    # ACLs
    _write(p("acl", "file"), b"acl\n")
    os.makedirs(p("acl", "dir"))
    runner.run(["setfacl", "-m", "u:1234:rw-,g:5678:r--,m::rw-", p("acl", "file")])
    runner.run(["setfacl", "-d", "-m", "u:1234:rwx", p("acl", "dir")])
    runner.run(["setfacl", "-m", "u:4242:r-x", p("acl", "dir")])
    t.kinds.add("acl")

    # xattrs
    _write(p("xattr", "file"), b"xattr\n")
    os.setxattr(p("xattr", "file"), "user.comment", b"hello world")
    os.setxattr(p("xattr", "file"), "user.selinux_like", SELINUX_LIKE)
    os.setxattr(p("xattr", "file"), "trusted.go2aliyun", b"\x00\x01binary\xff")
    os.setxattr(p("xattr"), "user.dir_attr", b"on a folder")
    t.kinds.add("xattr")

    # odd names
    for name in ("with space", "new\nline", "\u00fcn\u00efc\u00f8d\u00e9-\u540d\u524d.txt",
                 "-leading-dash", "--", ".hidden", "tab\there", "quote'\"s"):
        _write(p("names", name), name.encode("utf-8"))
    os.makedirs(p("names", "-dir with space"))
    _write(p("names", "-dir with space", "inner"), b"inner\n")
    t.kinds.add("oddnames")

    # modes
    _write(p("modes", "zero"), b"nobody may read me\n", mode=0)
    _write(p("modes", "setuid"), b"#!/bin/sh\n", mode=0o4755)
    _write(p("modes", "setgid"), b"#!/bin/sh\n", mode=0o2755)
    os.makedirs(p("modes", "sticky"))
    os.chmod(p("modes", "sticky"), 0o1777)
    os.makedirs(p("modes", "private"))
    os.chmod(p("modes", "private"), 0o700)
    t.kinds.add("modes")

    # owners
    _write(p("owners", "nobody"), b"n\n")
    os.chown(p("owners", "nobody"), 65534, 65534)
    _write(p("owners", "ghost"), b"g\n")
    os.chown(p("owners", "ghost"), 4242, 4343)  # no passwd/group entry
    os.makedirs(p("owners", "ghostdir"))
    os.chown(p("owners", "ghostdir"), 5555, 6666)
    t.kinds.add("owners")

    # excluded by the seed's defaults and by a user rule
    for d in ("dev", "proc", "sys", "media", "mnt", "var/lib/lxcfs"):
        _write(p(d, "should-not-arrive"), b"excluded\n")
    _write(p("mnt", "sub", "deep"), b"excluded\n")
    _write(p("var", "cache", "skipme", "big"), b"excluded\n" * 10)
    _write(p("var", "cache", "kept"), b"kept\n")

    # old mtimes, set last (creating children touches folders)
    os.utime(p("data", "regular.bin"), (OLD, OLD))
    os.utime(p("etc", "hostname"), (OLDER, OLDER))
    os.utime(p("links", "abs"), (OLD, OLD), follow_symlinks=False)
    for dirpath, dirnames, _files in os.walk(root):
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.utime(os.path.join(dirpath, d), (OLD, OLD + 7))
    os.utime(root, (OLD, OLD + 7))
    t.kinds.add("mtime")
    return t


def add_bulk(root, folder, count, size, seed=None):
    """``count`` incompressible files of ``size`` bytes under ``root/folder``."""
    d = os.path.join(root, folder)
    os.makedirs(d, exist_ok=True)
    paths = []
    for i in range(count):
        path = os.path.join(d, "bulk-%04d.bin" % i)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                n = min(left, 4 * 1024 * 1024)
                f.write(os.urandom(n))
                left -= n
        paths.append(path)
    return paths
