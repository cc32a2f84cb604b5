"""The fidelity check itself: it passes a faithful local rsync copy of the source tree
and catches each kind of damage (so the end-to-end tests can fail)."""

import os
import shutil

import pytest

from source_script import push
from tests.helpers import fidelity, sourcetree
from wire import runner

pytestmark = pytest.mark.root
RULES = ["- /%s" % p for p in sourcetree.DEFAULT_EXCLUDED] + [
    "- " + sourcetree.USER_EXCLUDE_RULE]


@pytest.fixture
def copied(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    os.makedirs(src)
    os.makedirs(dst)
    tree = sourcetree.build(src)
    rules = str(tmp_path / "rules")
    with open(rules, "w") as f:
        f.write("\n".join(RULES) + "\n")
    runner.run(push.rsync_argv(src, dst + "/", rules))
    return tree, src, dst


def test_tree_has_every_kind(copied):
    tree, src, dst = copied
    assert tree.kinds >= {"regular", "empty", "sparse", "hardlink", "symlink", "fifo",
                          "device", "acl", "xattr", "oddnames", "modes", "owners", "mtime"}
    assert os.path.exists(os.path.join(src, "names", "new\nline"))
    assert os.getxattr(os.path.join(src, "acl", "file"), "system.posix_acl_access")


def test_faithful_copy_passes(copied):
    tree, src, dst = copied
    assert fidelity.compare(src, dst, tree.excluded) == []


def test_damage_is_caught(copied):
    tree, src, dst = copied

    def d(*p):
        return os.path.join(dst, *p)

    os.chmod(d("modes", "setuid"), 0o755)
    os.chown(d("owners", "ghost"), 0, 0)
    os.removexattr(d("xattr", "file"), "trusted.go2aliyun")
    runner.run(["setfacl", "-b", d("acl", "file")])
    os.unlink(d("other", "c"))
    shutil.copy2(d("data", "hl", "a"), d("other", "c"))
    os.unlink(d("links", "rel"))
    os.symlink("../data/regular.bin", d("links", "rel"))
    with open(d("names", "with space"), "a") as f:
        f.write("x")
    os.utime(d("data", "regular.bin"), (5, 5))
    os.unlink(d("special", "fifo"))
    with open(d("extra-file"), "w") as f:
        f.write("extra")
    os.makedirs(d("proc"), exist_ok=True)
    with open(d("proc", "leaked"), "w") as f:
        f.write("excluded")
    with open(d("data", "sparse.img"), "r+b") as f:
        f.write(b"\1" * (16 * 1024 * 1024))
    text = "\n".join(fidelity.compare(src, dst, tree.excluded))
    for expected in ("mode differs for 'modes/setuid'", "uid differs for 'owners/ghost'",
                     "xattrs differs for 'xattr/file'", "xattrs differs for 'acl/file'",
                     "hard-link groups differ", "target differs for 'links/rel'",
                     "sha256 differs for 'names/with space'",
                     "mtime differs for 'data/regular.bin'", "missing in copy: 'special/fifo'",
                     "extra in copy: 'extra-file'", "excluded but arrived: 'proc/leaked'",
                     "sparse file filled in copy: 'data/sparse.img'"):
        assert expected in text
    os.mknod(d("special", "chr"), 0o600 | 0o020000, os.makedev(1, 3))
    assert "device node arrived: 'special/chr'" in "\n".join(
        fidelity.compare(src, dst, tree.excluded))
