import os
import re

import pytest

from tests.helpers import sample
from wire import bootcheck

CONSOLES = os.path.join(os.path.dirname(__file__), "..", "data", "consoles")


def console(name):
    with open(os.path.join(CONSOLES, name), errors="replace") as f:
        return f.read()


@pytest.mark.parametrize("name, code", [
    ("debian12-ide-login.log", "verify.ok"),
    ("debian12-panic-no-initrd.log", "verify.kernel_panic"),
    ("debian12-initramfs-alert.log", "verify.initramfs_shell"),
    ("debian12-missing-data-disk.log", "verify.emergency_shell"),
    # the login prompt follows, but the boot waited for a device that is not there
    # (issue 18): the real login console with initramfs-tools' lines for a missing resume
    # device in place of its local-premount line, and with the real systemd lines of
    # debian12-missing-data-disk.log (a nofail mount: no emergency shell) before the
    # multi-user target
    ("debian12-resume-gave-up-login.log", "verify.device_wait"),
    ("debian12-device-timeout-login.log", "verify.device_wait"),
])
def test_classify_real_consoles(name, code):
    verdict = bootcheck.classify_console(console(name))
    assert verdict is not None and verdict.code == code
    assert verdict.ok == (code == "verify.ok")


def test_undecided_until_finished_then_timeout():
    text = console("debian12-ide-login.log")
    cut = text[: text.index("login:") - 40]
    assert bootcheck.classify_console(cut) is None
    verdict = bootcheck.classify_console(cut, finished=True)
    assert not verdict.ok and verdict.code == "verify.timeout" and "last line" in verdict.reason


def test_failure_wins_over_a_later_login_prompt():
    text = "[FAILED] Failed to mount mnt-data.mount - /data.\nhost login: "
    verdict = bootcheck.classify_console(text)
    assert verdict.code == "verify.mount_failed"


@pytest.mark.parametrize("line", [
    "Gave up waiting for suspend/resume device",
    "\x1b[0;1;31m TIME \x1b[0m] Timed out waiting for device \x1b[0;1;39mdev-sda4.swap"
    "\x1b[0m - /dev/sda4.",
    "[\x1b[0;1;38;5;185mDEPEND\x1b[0m] Dependency failed for \x1b[0;1;39mswap.target"
    "\x1b[0m - Swaps.",
])
def test_a_wait_for_a_missing_device_fails_even_with_a_login_prompt(line):
    verdict = bootcheck.classify_console("Booting\r\n%s\r\nhost login: " % line)
    assert not verdict.ok and verdict.code == "verify.device_wait"
    assert "waiting for" in verdict.reason and re.sub(r"\x1b\[[0-9;]*m", "", line).split(
        "] ")[-1] in verdict.reason  # the line itself, without its colours


def test_qemu_argv_looks_like_ecs():
    argv = bootcheck.render_qemu_argv(["/w/o0.qcow2", "/w/o1.qcow2"], "/w/console.log")
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "file=/w/o0.qcow2,format=qcow2,if=virtio,index=0" in argv
    assert "file=/w/o1.qcow2,format=qcow2,if=virtio,index=1" in argv
    assert "virtio-net-pci,netdev=n0" in argv and "user,id=n0,restrict=on" in argv
    assert "file:/w/console.log" in argv and "pflash" not in " ".join(argv)
    uefi = bootcheck.render_qemu_argv(["/w/o0.qcow2"], "/c", firmware="uefi",
                                      ovmf_code="/code.fd", ovmf_vars="/vars.fd")
    assert "if=pflash,format=raw,readonly=on,file=/code.fd" in uefi
    assert "if=pflash,format=raw,file=/vars.fd" in uefi


@pytest.fixture(scope="module")
def sample_kernel():
    sample.ensure_sample()
    with sample.kernel_files() as files:
        yield files


@pytest.mark.qemu
def test_real_boot_of_the_sample_server_reaches_login(sample_kernel, tmp_path):
    vmlinuz, initrd, uuid = sample_kernel
    verdict = bootcheck.boot_and_watch(
        [sample.image("system"), sample.image("disk1")], bus="ide", kernel=vmlinuz,
        initrd=initrd, append="root=UUID=%s ro console=ttyS0,115200n8" % uuid,
        workdir=str(tmp_path), timeout=300)
    assert verdict.ok, verdict.console[-3000:]
    assert "Mounted mnt-disk1.mount - /mnt/disk1." in verdict.console  # colour codes removed
    assert not list(tmp_path.glob("overlay*.qcow2")), "overlays are removed"


@pytest.mark.qemu
def test_real_boot_without_root_fails_as_panic_not_success(sample_kernel, tmp_path):
    vmlinuz, _initrd, _uuid = sample_kernel
    with pytest.raises(bootcheck.VerifyError) as ei:
        bootcheck.require_boot([sample.image("system")], bus="ide", kernel=vmlinuz,
                               append="root=/dev/vdz9 ro console=ttyS0,115200n8",
                               workdir=str(tmp_path), timeout=120)
    assert ei.value.code == "verify.kernel_panic"
    assert "Kernel panic" in ei.value.details["console_tail"]
