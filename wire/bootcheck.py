"""Boot disks under qemu and read the serial console: the proof behind VERIFYING.

The disks are never written: each gets a throw-away qcow2 overlay. The machine looks
like an ECS instance (virtio disks and NIC, serial console, BIOS or OVMF). We pass
only when a login prompt appears and nothing on the console says otherwise.

Why a login prompt is enough for "every fstab mount is up": on a systemd system each
fstab entry without ``nofail`` is required by ``local-fs.target``; when one fails,
systemd goes to ``emergency.target`` and prints "You are in emergency mode" instead of
starting the gettys. So login prompt + no failure marker => the required mounts are up.
:func:`classify_console` also fails on any "[FAILED] Failed to mount" line, which
covers ``nofail`` entries that systemd reports, and on a wait for a device that is not
there ("Gave up waiting for", "Timed out waiting for device", "Dependency failed for":
``verify.device_wait``) even when the login prompt follows.

Pure parts (:func:`classify_console`, :func:`render_qemu_argv`) are unit-tested on
captured consoles under tests/data/consoles/; :func:`boot_and_watch` runs qemu.
"""

import logging
import os
import re
import shutil
import tempfile
import time

from wire import runner
from wire.errors import VerifyError

log = logging.getLogger(__name__)

LOGIN_RE = re.compile(r"^[\w.-]+ login:", re.M)
# (code, pattern, what it means for a person)
FAILURES = [
    ("verify.kernel_panic", re.compile(r"Kernel panic - not syncing"), "the kernel panicked"),
    ("verify.emergency_shell",
     re.compile(r"You are in emergency mode|Give root password for maintenance|"
                r"Press Enter for maintenance|Cannot open access to console, the root account"),
     "systemd dropped to the emergency shell"),
    ("verify.initramfs_shell",
     re.compile(r"ALERT! .* does not exist|Dropping to a shell|\(initramfs\) |"
                r"Entering emergency mode. Exit the shell to continue|"
                r"dracut Warning: Could not boot"),
     "the initramfs could not find or mount the root filesystem"),
    ("verify.mount_failed", re.compile(r"\[FAILED\] Failed to mount .*"),
     "a filesystem failed to mount"),
    # Not fatal for the boot, which goes on to a login prompt, but the machine waited
    # (initramfs-tools 30 s for a resume device, systemd 90 s for an fstab device) for
    # something the migration left behind (issue 18: a stale RESUME= in the initrd).
    ("verify.device_wait",
     re.compile(r"Gave up waiting for .*|Timed out waiting for device .*|"
                r"Dependency failed for .*"),
     "the boot was waiting for a device that is not there"),
    ("verify.bootloader",
     re.compile(r"grub rescue>|error: no such device|Boot failed: not a bootable disk|"
                r"No bootable device|error: unknown filesystem|error: file .* not found"),
     "the boot loader could not load the system"),
]


class BootVerdict(object):
    def __init__(self, ok, code, reason, console):
        self.ok = ok
        self.code = code
        self.reason = reason
        self.console = console

    def to_dict(self, tail=4000):
        return {"ok": self.ok, "code": self.code, "reason": self.reason,
                "console_tail": self.console[-tail:]}

    def __repr__(self):
        return "BootVerdict(ok=%r, code=%r, reason=%r)" % (self.ok, self.code, self.reason)


def _clean(text):
    # Serial consoles carry ANSI colour codes and carriage returns.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return text.replace("\r", "")


def classify_console(text, finished=False):
    """Decide from console output: a BootVerdict, or None while undecided.

    ``finished`` says the machine stopped or the time ran out: then an undecided
    console is a failure (timeout).
    """
    text = _clean(text)
    for code, pattern, meaning in FAILURES:
        m = pattern.search(text)
        if m:
            return BootVerdict(False, code, "%s: %r" % (meaning, m.group(0).strip()), text)
    if LOGIN_RE.search(text):
        return BootVerdict(True, "verify.ok", "login prompt reached", text)
    if finished:
        last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
        return BootVerdict(False, "verify.timeout",
                           "no login prompt before the time ran out; last line: %r" % last[0],
                           text)
    return None


def render_accel(accel, smp):
    """The ``-accel`` value (pure): TCG with one host thread per guest CPU (MTTCG) when
    the guest has more than one; KVM or anything else as given."""
    if accel == "tcg" and int(smp) > 1:
        return "tcg,thread=multi"
    return accel


def render_qemu_argv(disks, console_path, firmware="bios", memory_mib=1024, smp=1,
                     ovmf_code=None, ovmf_vars=None, accel="tcg", bus="virtio", kernel=None,
                     initrd=None, append=None, name=None, netdev="user,id=n0,restrict=on",
                     extra=(), qemu="qemu-system-x86_64"):
    """The one qemu argv builder (pure): verification boots and the local provider's
    instances. ``disks``: files, the system disk first, or (file, serial) pairs (a
    virtio-blk disk whose serial names it under /dev/disk/by-id, as on ECS). ``bus`` is
    ``virtio`` (what ECS has) or ``ide`` (to boot a source as it runs today).
    ``kernel``/``initrd``/``append`` boot a kernel directly; ``extra`` is appended."""
    # -cpu max: under TCG the guest gets AES-NI & co., which its TLS and rsync use;
    # +invtsc: a TSC the guest may keep as its clock (the appliance's cmdline trusts it);
    # one vCPU by default: multi-threaded TCG pays for every atomic instruction, and one
    # vCPU ran update-initramfs ~25% faster than two here (docs/testing.md);
    # virtio-rng: the guest's entropy does not wait for interrupts that TCG makes rare
    argv = [qemu] + (["-name", name] if name else []) + [
        "-accel", render_accel(accel, smp), "-cpu", "max,+invtsc", "-m", str(memory_mib),
        "-smp", str(smp), "-display", "none", "-serial", "file:" + console_path,
        "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci"]
    if firmware == "uefi":
        argv += ["-drive", "if=pflash,format=raw,readonly=on,file=" + ovmf_code,
                 "-drive", "if=pflash,format=raw,file=" + ovmf_vars]
    for i, disk in enumerate(disks):
        if isinstance(disk, tuple):
            argv += ["-drive", "file=%s,if=none,id=d%d,format=qcow2,cache=writeback"
                     % (disk[0], i), "-device", "virtio-blk-pci,drive=d%d,serial=%s%s"
                     % (i, disk[1], ",bootindex=0" if i == 0 else "")]
        else:
            argv += ["-drive", "file=%s,format=qcow2,if=%s,index=%d" % (disk, bus, i)]
    if kernel:
        argv += ["-kernel", kernel]
        if initrd:
            argv += ["-initrd", initrd]
        if append:
            argv += ["-append", append]
    return argv + list(extra)


OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def boot_and_watch(disks, firmware="bios", timeout=420, workdir=None, bus="virtio",
                   kernel=None, initrd=None, append=None, poll=0.5):
    """Boot ``disks`` (raw images, block devices or ``.qcow2`` files, system disk
    first) on throw-away overlays and watch the serial console. Returns a
    BootVerdict; the console log is kept in ``workdir`` (console.log)."""
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="go2aliyun-verify-")
    os.makedirs(workdir, exist_ok=True)
    overlays = []
    proc = None
    console = os.path.join(workdir, "console.log")
    try:
        for i, disk in enumerate(disks):
            ov = os.path.join(workdir, "overlay%d.qcow2" % i)
            if os.path.exists(ov):
                os.unlink(ov)
            fmt = "qcow2" if str(disk).endswith(".qcow2") else "raw"
            runner.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b",
                        os.path.abspath(disk), ov])
            overlays.append(ov)
        vars_copy = None
        if firmware == "uefi":
            vars_copy = os.path.join(workdir, "OVMF_VARS.fd")
            shutil.copyfile(OVMF_VARS, vars_copy)
        open(console, "w").close()
        argv = render_qemu_argv(overlays, console, firmware=firmware, ovmf_code=OVMF_CODE,
                                ovmf_vars=vars_copy, bus=bus, kernel=kernel, initrd=initrd,
                                append=append, extra=["-monitor", "none", "-no-reboot"])
        log.info("verification boot: %s", " ".join(argv))
        proc = runner.start(argv, stdin=runner.DEVNULL, stdout=runner.DEVNULL,
                            stderr=runner.PIPE)
        deadline = time.time() + timeout
        verdict = None
        while verdict is None:
            time.sleep(poll)
            with open(console, errors="replace") as f:
                text = f.read()
            stopped = proc.poll() is not None
            verdict = classify_console(text, finished=stopped or time.time() > deadline)
        if proc.poll() is not None and proc.returncode not in (0, None) and not verdict.ok:
            err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
            if err.strip() and not text.strip():
                verdict.reason += "; qemu said: " + err.strip()[-500:]
        return verdict
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for ov in overlays:
            if os.path.exists(ov):
                os.unlink(ov)
        if own_dir:
            # keep the console log next to nothing: callers that want it pass workdir
            shutil.rmtree(workdir, ignore_errors=True)


def require_boot(disks, **kw):
    """Boot and raise VerifyError (with the console tail) unless the boot passed."""
    verdict = boot_and_watch(disks, **kw)
    if not verdict.ok:
        raise VerifyError("verification boot failed: %s" % verdict.reason, code=verdict.code,
                          console_tail=verdict.console[-4000:])
    return verdict
