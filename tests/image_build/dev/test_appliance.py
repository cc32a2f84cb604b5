"""The appliance's pure parts (image_build/dev/appliance.py); the build itself runs in
tests/image_build/test_local_provider.py."""

import os
import sys
import threading

from image_build.dev import appliance, sample_server


def test_cache_key_follows_the_source_tree(tmp_path):
    for part in ("pyproject.toml", "wire/a.py"):
        os.makedirs(os.path.dirname(str(tmp_path / part)), exist_ok=True)
        (tmp_path / part).write_text("x = 1\n")
    os.makedirs(str(tmp_path / "wire" / "__pycache__"))
    (tmp_path / "wire" / "__pycache__" / "a.pyc").write_bytes(b"junk")
    parts = ("pyproject.toml", "wire")
    first = appliance.source_tree_hash(str(tmp_path), parts)
    (tmp_path / "wire" / "__pycache__" / "a.pyc").write_bytes(b"other junk")
    assert appliance.source_tree_hash(str(tmp_path), parts) == first
    (tmp_path / "wire" / "a.py").write_text("x = 2\n")
    assert appliance.source_tree_hash(str(tmp_path), parts) != first


def test_two_builders_of_one_cache_file_take_turns(tmp_path):
    path = str(tmp_path / "cache" / "appliance-k.qcow2")
    order = []

    def second():
        with sample_server.cache_lock(path):
            order.append("second in")

    with sample_server.cache_lock(path):
        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        assert t.is_alive()  # waits for the first builder
        order.append("first out")
    t.join(5)
    assert order == ["first out", "second in"]


def test_prune_keeps_the_current_appliance_and_its_lock(tmp_path):
    names = ["appliance-old.qcow2", "appliance-old.qcow2.lock", "appliance-new.qcow2",
             "appliance-new.qcow2.lock", "debian-bookworm-x.tar"]
    for name in names:
        (tmp_path / name).write_text("")
    appliance.prune(str(tmp_path), keep=str(tmp_path / "appliance-new.qcow2"))
    assert sorted(os.listdir(str(tmp_path))) == sorted(names[2:])


def test_own_package_list_means_own_root_tree():
    assert sample_server.rootfs_key(packages=appliance.PACKAGES) != sample_server.rootfs_key()
    for needed in ("cloud-init", "python3-venv", "rsync", "qemu-utils", "grub-pc"):
        assert needed in appliance.PACKAGES


def test_grub_and_fstab_render():
    grub = appliance.render_grub_default()
    assert ('GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 net.ifnames=0 '
            'tsc=reliable clocksource=tsc mitigations=off"') in grub
    assert "GRUB_TIMEOUT=0" in grub
    assert appliance.render_fstab("abcd").splitlines()[1] == (
        "UUID=abcd / ext4 errors=remount-ro 0 1")


def test_build_image_for_aliyun_needs_a_region_and_a_base_image(capsys, tmp_path):
    from image_build import cli

    # the aliyun build itself: tests/image_build/test_buildimage.py
    assert cli.main(["--workdir", str(tmp_path), "build-image"]) == 2
    assert "--region" in capsys.readouterr().err
    assert cli.main(["--workdir", str(tmp_path), "build-image", "--region", "cn-hangzhou"]) == 2
    assert "--base-image" in capsys.readouterr().err


def test_wheels_are_built_by_the_python_that_runs_the_build(monkeypatch, tmp_path):
    """On a stock Debian 12, ``python3`` on PATH is Debian's, with no pip (PEP 668): the
    demo runs from setup.sh's .venv, and the wheels must be made by that Python."""
    calls = []
    monkeypatch.setattr(appliance.runner, "run", lambda argv, **kw: calls.append(argv))
    appliance.build_wheels(str(tmp_path))
    assert calls and calls[0][:4] == [sys.executable, "-m", "pip", "wheel"], calls
