"""A chroot over the target system, set up and undone in reverse order even on failure.

Inside: ``/dev /proc /sys /run`` bound from the receiver (plus efivarfs for a UEFI
target when the receiver has it), a temporary ``/etc/resolv.conf`` (the receiver's),
``/usr/sbin/policy-rc.d`` answering 101 so no package script starts a daemon, and
``/etc/grub.d/30_os-prober`` made non-executable so grub-mkconfig lists no receiver
system. Every change to the target is put back when the block ends.
"""

import contextlib
import logging
import os
import stat

from wire import runner
from wire.paths import target_path

log = logging.getLogger(__name__)

BINDS = ("/dev", "/dev/pts", "/proc", "/sys", "/run")
POLICY_RC_D = "#!/bin/sh\n# go2aliyun: no daemon starts during conversion\nexit 101\n"
SAVED = ".go2aliyun-saved"
EFIVARS = "/sys/firmware/efi/efivars"
# A guard against a command that hangs, not a target: update-initramfs takes under a
# minute on an ECS instance but 8-14 min in the local provider's TCG guest on a
# shared 2-core host (docs/testing.md, "Local provider").
COMMAND_TIMEOUT = 2700


def _is_mount(path):
    return os.path.ismount(path)


def _umount(path):
    try:
        runner.run(["umount", path])
    except Exception:  # noqa: BLE001 - fall back to a lazy unmount, never leave it
        log.warning("umount %s failed; lazy unmount", path)
        runner.run(["umount", "-l", path], ok_codes=None)


def _replace_file(path, content, mode):
    """Put ``content`` at ``path`` and return an undo callback."""
    saved = path + SAVED
    existed = os.path.lexists(path)
    if existed:
        os.rename(path, saved)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    os.chmod(path, mode)

    def undo():
        if os.path.lexists(path):
            os.unlink(path)
        if existed:
            os.rename(saved, path)
    return undo


@contextlib.contextmanager
def chroot(root, firmware="bios", resolv_conf="/etc/resolv.conf"):
    """Yield ``run(argv, **kw)`` that runs argv inside the chroot at ``root``."""
    root = os.path.abspath(root)
    with contextlib.ExitStack() as stack:
        for src in BINDS:
            if not os.path.isdir(src):
                continue
            where = target_path(root, src)
            os.makedirs(where, exist_ok=True)
            runner.run(["mount", "--bind", src, where])
            stack.callback(_umount, where)
        if firmware == "uefi" and os.path.isdir(EFIVARS) and os.listdir(EFIVARS):
            where = target_path(root, EFIVARS)
            if os.path.isdir(where) and not _is_mount(where):
                runner.run(["mount", "-t", "efivarfs", "efivarfs", where])
                stack.callback(_umount, where)
        content = ""
        if os.path.isfile(resolv_conf):
            with open(resolv_conf) as f:
                content = f.read()
        stack.callback(_replace_file(target_path(root, "/etc/resolv.conf"), content, 0o644))
        stack.callback(_replace_file(target_path(root, "/usr/sbin/policy-rc.d"), POLICY_RC_D,
                                     0o755))
        prober = target_path(root, "/etc/grub.d/30_os-prober")
        if os.path.isfile(prober):
            mode = stat.S_IMODE(os.stat(prober).st_mode)
            os.chmod(prober, mode & ~0o111)
            stack.callback(os.chmod, prober, mode)

        def run(argv, env=None, timeout=COMMAND_TIMEOUT, **kw):
            full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "DEBIAN_FRONTEND": "noninteractive"}
            full_env.update(env or {})
            return runner.run(["chroot", root] + list(argv), env=full_env, timeout=timeout,
                              **kw)
        yield run


__all__ = ["chroot", "BINDS", "POLICY_RC_D"]
