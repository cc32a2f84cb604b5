import os

import pytest

from receiver import steps
from wire import runner
from wire.errors import DiskError


def test_target_disks_in_ecs_order():
    result = {"devices": {"disk10": "/dev/vdk", "system": "/dev/vdb", "disk2": "/dev/vdd",
                          "disk1": "/dev/vdc"}}
    assert steps.target_disks_in_order(result) == ["/dev/vdb", "/dev/vdc", "/dev/vdd",
                                                   "/dev/vdk"]
    with pytest.raises(DiskError):
        steps.target_disks_in_order({"devices": {"disk1": "/dev/vdc"}})


def test_local_image_description_maps_disks_like_create_image():
    desc = steps.render_local_image_description(
        "m-1", {"image_name": "IMG_1", "platform": "Debian", "architecture": "x86_64"},
        {"arch": "x86_64"}, [("system", "/o/system.qcow2"), ("disk1", "/o/disk1.qcow2")],
        "BIOS")
    assert desc["image_name"] == "IMG_1" and desc["boot_mode"] == "BIOS"
    assert desc["disks"] == [
        {"module": "system", "file": "system.qcow2", "device": "/dev/xvda",
         "disk_type": "system", "format": "qcow2"},
        {"module": "disk1", "file": "disk1.qcow2", "device": "/dev/xvdb",
         "disk_type": "data", "format": "qcow2"}]


@pytest.mark.root
def test_image_source_reads_a_loop_devices_backing_file(tmp_path):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    dev = runner.run(["losetup", "-f", "--show", path]).stdout.strip()
    try:
        assert steps.image_source(dev) == os.path.realpath(path)
    finally:
        runner.run(["losetup", "-d", dev])
    assert steps.image_source("/dev/null") == "/dev/null"


class _Ctx(object):
    """What make_local_image reads of the worker's StepContext."""

    def __init__(self, store, out, name):
        self.store, self.config, self.doc = store, {"output": out}, {"id": "m-1"}
        self.plan, self.manifest, self.image = {"image_name": name}, {}, None

    def progress(self, percent, message):
        pass

    def set(self, image=None, **kw):
        self.image = image


@pytest.mark.parametrize("name", ["../victim", "/tmp/../victim", "link", "a\x00b"])
def test_make_local_image_refuses_a_folder_outside_its_output(tmp_path, store, monkeypatch,
                                                              name):
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    (victim / "keep").write_text("data")
    os.symlink(str(victim), str(out / "link"))
    if name.startswith("/tmp"):
        name = str(tmp_path / "victim")
    store.write(steps.PREPARE_FILE, {"devices": {"system": "/dev/null"}})
    monkeypatch.setattr(steps, "release_disks", lambda ctx: None)
    monkeypatch.setattr(steps.runner, "run", lambda argv, **kw: open(argv[-1], "w").close())
    ctx = _Ctx(store, str(out), name)
    with pytest.raises(DiskError) as e:
        steps.make_local_image(ctx)
    assert e.value.code == "image.name_invalid" and ctx.image is None
    assert (victim / "keep").read_text() == "data"
    assert sorted(os.listdir(str(tmp_path))) == ["out", "state", "victim"]


def test_make_local_image_writes_into_its_output(tmp_path, store, monkeypatch):
    out = tmp_path / "out"
    store.write(steps.PREPARE_FILE, {"devices": {"system": "/dev/null"}})
    monkeypatch.setattr(steps, "release_disks", lambda ctx: None)
    monkeypatch.setattr(steps.runner, "run", lambda argv, **kw: open(argv[-1], "w").close())
    ctx = _Ctx(store, str(out), "IMG_1")
    steps.make_local_image(ctx)
    assert ctx.image["path"] == str(out / "IMG_1")
    assert sorted(os.listdir(str(out / "IMG_1"))) == ["image.json", "system.qcow2"]
