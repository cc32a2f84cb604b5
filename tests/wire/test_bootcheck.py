import os

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
