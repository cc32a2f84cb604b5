"""The copy's own tools (grub-install, grub-mkconfig, update-initramfs, dracut) run in a
sandbox over the target system, set up and undone in reverse order even on failure.

These programs come from the migrated server and run as root: a plain chroot would let
them reach the receiver's network (the metadata service 100.100.100.200 and the RAM
role's credentials), see its processes through a shared ``/proc`` (``/proc/1/root`` is
the receiver's ``/``: its state folder, keys and tokens) and leave processes behind.
So each command runs under bubblewrap (:func:`sandbox_argv`, pure): new user, mount,
PID, network, IPC, UTS and cgroup namespaces (``--unshare-all``: no network at all, only
a loopback), the target tree as ``/``, a fresh ``/dev`` with only the target's own disk
nodes added, its own ``/proc``, ``/sys`` read-only (a BIOS target does not see the
receiver's EFI firmware), empty ``/run`` and ``/tmp``, a clean environment; when the
command ends, the PID namespace ends and every process it started with it
(``--die-with-parent`` if the receiver goes first). No resolv.conf is needed: there is
no network to resolve for.

A target on device-mapper (LVM) is the one exception: the kernel answers device-mapper
ioctls only to CAP_SYS_ADMIN of the first user namespace, and grub-probe and the
initramfs's LVM hook need them. Its sandbox keeps every other namespace (no network, no
receiver process, nothing left behind) but no user namespace, with
``/dev/mapper/control`` and the volumes' nodes added: a hostile tool there could still
mount a device of the receiver, which docs/security.md names.

In the target, for the time of the block: ``/usr/sbin/policy-rc.d`` answering 101 so no
package script starts a daemon, and ``/etc/grub.d/30_os-prober`` made non-executable so
grub-mkconfig lists no other system. Both are put back when the block ends. Every path
of the copy goes through :func:`receiver.convert.inroot.in_root`.
"""

import contextlib
import logging
import os
import re
import stat

from receiver.convert.inroot import in_root
from receiver.disks import probe
from wire import runner
from wire.errors import ConversionError

log = logging.getLogger(__name__)

BWRAP = "bwrap"
POLICY_RC_D = "#!/bin/sh\n# go2aliyun: no daemon starts during conversion\nexit 101\n"
SAVED = ".go2aliyun-saved"
# The folders the sandbox mounts over: real folders of the copy, never its symlinks.
MOUNT_POINTS = ("/dev", "/proc", "/sys", "/run", "/tmp")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A guard against a command that hangs, not a target: update-initramfs takes under a
# minute on an ECS instance but 8-14 min in the local provider's TCG guest on a
# shared 2-core host (docs/testing.md, "Local provider").
COMMAND_TIMEOUT = 2700


def sandbox_argv(root, argv, devices=(), env=None, firmware="bios"):
    """The bwrap argv that runs ``argv`` over the target system at ``root`` (pure).

    ``devices``: the receiver's device nodes the command may use (the target disks and
    their partitions: grub-install writes the system disk), each at its own path."""
    mapper = any(d.startswith(("/dev/mapper/", "/dev/dm-")) for d in devices)
    unshare = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try"] if mapper else ["--unshare-all"]
    out = [BWRAP] + unshare + ["--die-with-parent", "--new-session", "--bind", root, "/",
           "--dev", "/dev"]
    for dev in devices:
        out += ["--dev-bind", dev, dev]
    out += ["--proc", "/proc", "--ro-bind", "/sys", "/sys"]
    if firmware != "uefi":  # no UEFI entries in a BIOS guest's grub.cfg
        out += ["--tmpfs", "/sys/firmware"]
    out += ["--tmpfs", "/run", "--tmpfs", "/tmp", "--chdir", "/", "--clearenv"]
    full_env = {"PATH": PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    full_env.update(env or {})
    for key in sorted(full_env):
        out += ["--setenv", key, full_env[key]]
    return out + ["--"] + list(argv)


def plan_devices(root, system_device, mounts, dev_names):
    """The device nodes a sandbox over ``root`` gets (pure): the sources of the mounts at
    and under ``root`` (``mounts``: :func:`wire.parsers.parse_mountinfo` records), the
    system disk and its partitions (``dev_names``: the names in the receiver's /dev)."""
    root = os.path.abspath(root)
    out = []
    for m in mounts:
        mp = m["mountpoint"]
        if (mp == root or mp.startswith(root + "/")) and m["source"].startswith("/dev/"):
            out.append(m["source"])
    if system_device:
        out.append(system_device)
        base = os.path.basename(system_device)
        # the kernel's partition names: "p" after a name ending in a digit (loop3p1,
        # nvme0n1p1), none otherwise (vdb1); loop30 is another disk
        part = re.compile(re.escape(base) + (r"p\d+$" if base[-1:].isdigit() else r"\d+$"))
        out += ["/dev/" + n for n in sorted(dev_names) if part.match(n)]
    return sorted(set(out))


def _replace_file(path, content, mode):
    """Put ``content`` at ``path`` (resolved in the copy, its last component not followed)
    and return an undo callback."""
    saved = path + SAVED
    existed = os.path.lexists(path)
    if existed:
        os.rename(path, saved)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(path, mode)

    def undo():
        if os.path.lexists(path):
            os.unlink(path)
        if existed:
            os.rename(saved, path)
    return undo


def _ensure_mount_points(root):
    """The copy's folders the sandbox mounts over: refused when a symlink, made (with the
    modes a system gives them) when missing, rather than by bwrap with 0755."""
    for rel in MOUNT_POINTS:
        where = in_root(root, rel)
        if where != os.path.join(root, rel.lstrip("/")):
            raise ConversionError(
                "%s in the migrated system is a symlink: the sandbox mounts over it"
                % rel, code="conversion.unsafe_path", path=rel,
                hint="%s must be a folder of the copy" % rel)
        if not os.path.lexists(where):
            os.mkdir(where)
            os.chmod(where, 0o1777 if rel == "/tmp" else 0o555 if rel in ("/proc", "/sys")
                     else 0o755)


@contextlib.contextmanager
def sandbox(root, firmware="bios", system_device=None):
    """Yield ``run(argv, env=None, **kw)`` that runs argv in a sandbox over ``root``."""
    root = os.path.abspath(root)
    _ensure_mount_points(root)
    devices = plan_devices(root, system_device, probe.read_mountinfo(),
                           os.listdir("/dev") if system_device else ())
    mapped = [d for d in devices if d.startswith("/dev/mapper/")]
    if mapped:  # the volumes' dm-N nodes and the control node (see above)
        devices = sorted(set(devices) | {os.path.realpath(d) for d in mapped}
                         | {"/dev/mapper/control"})
    with contextlib.ExitStack() as stack:
        stack.callback(_replace_file(in_root(root, "/usr/sbin/policy-rc.d", follow=False),
                                     POLICY_RC_D, 0o755))
        prober = in_root(root, "/etc/grub.d/30_os-prober")
        if os.path.isfile(prober):
            mode = stat.S_IMODE(os.stat(prober).st_mode)
            os.chmod(prober, mode & ~0o111)
            stack.callback(os.chmod, prober, mode)

        def run(argv, env=None, timeout=COMMAND_TIMEOUT, **kw):
            return runner.run(sandbox_argv(root, argv, devices, env, firmware),
                              timeout=timeout, **kw)
        yield run



__all__ = ["sandbox", "sandbox_argv", "plan_devices", "POLICY_RC_D", "COMMAND_TIMEOUT"]
