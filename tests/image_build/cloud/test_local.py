"""Pure parts of the local provider (image_build/cloud/local.py); its behaviour is in the
contract suite (test_contract.py, param ``local``) and test_local_provider.py."""

import os
import socket

import pytest

from image_build.cloud.local import (
    PRODUCT,
    LocalCloud,
    _keep_boot_image,
    disk_id_for,
    parse_qemu_img_progress,
    render_instance_argv,
    render_meta_data,
    unix_connect,
)
from receiver import cli
from receiver.datachannel import free_port
from wire.manifest import render_image_description


def test_disk_ids_fit_a_virtio_serial_and_depend_on_instance_and_name():
    a = disk_id_for("g2a-tok1", "go2aliyun-target-system")
    assert len(a) == 20 and a.startswith("d-")
    assert a == disk_id_for("g2a-tok1", "go2aliyun-target-system")
    assert a != disk_id_for("g2a-tok2", "go2aliyun-target-system")
    assert a != disk_id_for("g2a-tok1", "go2aliyun-target-disk1")


def test_receiver_config_names_disk_ids_and_host_verification(tmp_path):
    cloud = LocalCloud(str(tmp_path))
    cfg = cloud.receiver_config({"provider": "aliyun", "migration_id": "m-1",
                                 "target_disks": ["go2aliyun-target-system",
                                                  "go2aliyun-target-disk1"]}, "tok")
    assert cfg["provider"] == "local" and cfg["verify_boot"] == "provider"
    assert cfg["target_disk_ids"] == [disk_id_for("tok", "go2aliyun-target-system"),
                                      disk_id_for("tok", "go2aliyun-target-disk1")]
    assert cfg["migration_id"] == "m-1"


def test_qemu_argv_serials_forwards_and_seed():
    argv = render_instance_argv("/s/instances/i-1",
                                [("/s/sys.qcow2", "d-a"), ("/s/t.qcow2", "d-b")],
                                "/s/seed.iso", "10.250.0.2", {8080: 8080, 8703: 18703})
    text = " ".join(argv)
    assert argv[:5] == ["qemu-system-x86_64", "-name", "i-1", "-accel", "tcg"]
    assert "hostfwd=tcp:10.250.0.2:8080-:8080,hostfwd=tcp:10.250.0.2:18703-:8703" in text
    assert "virtio-blk-pci,drive=d0,serial=d-a,bootindex=0" in text
    assert "virtio-blk-pci,drive=d1,serial=d-b" in text
    assert "file=/s/seed.iso,if=ide,media=cdrom,format=raw,readonly=on" in text
    assert "-daemonize" in argv and "-S" not in argv
    assert "-S" in render_instance_argv("/x", [], "/s", "a", {}, start_paused=True)
    assert argv[argv.index("-device", argv.index("virtio-net-pci,netdev=n0")) + 1] == \
        "virtio-rng-pci"


def test_qemu_argv_of_an_instance_started_with_no_user_data():
    """As from the ECS console: no NoCloud seed at all; the firmware names the machine
    (what the receiver reads to know the host verifies and makes the image)."""
    argv = render_instance_argv("/s/instances/i-1", [("/s/sys.qcow2", "d-a")], None,
                                "10.250.0.2", {8080: 8080})
    assert "cdrom" not in " ".join(argv) and "seed" not in " ".join(argv)
    assert argv[argv.index("-smbios") + 1] == \
        "type=1,manufacturer=go2aliyun,product=go2aliyun local instance"
    assert cli.platform_settings(PRODUCT) == {"provider": "local", "verify_boot": "provider"}


def test_qemu_argv_binds_the_monitor_relative_to_the_instance_folder():
    argv = render_instance_argv("/" + "d" * 200 + "/i-1", [], "/s", "a", {})
    assert argv[argv.index("-qmp") + 1] == "unix:qmp,server=on,wait=off"


def test_a_monitor_socket_deeper_than_a_socket_address_holds_is_reached(tmp_path):
    deep = os.path.join(str(tmp_path), "x" * 100, "instances", "i-local0123456789")
    os.makedirs(deep)
    path = os.path.join(deep, "qmp")
    assert len(path) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(deep, os.O_RDONLY)
    try:
        server.bind("/proc/self/fd/%d/qmp" % fd)  # as qemu does from its cwd
    finally:
        os.close(fd)
    server.listen(1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):
        client.connect(path)
    unix_connect(client, path)
    peer, _ = server.accept()
    client.sendall(b"hello")
    assert peer.recv(5) == b"hello"
    for s in (peer, client, server):
        s.close()


def test_qemu_argv_multi_threaded_tcg_for_more_than_one_cpu():
    argv = render_instance_argv("/x", [], "/s", "a", {}, smp=2)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-smp") + 1] == "2"
    assert argv[argv.index("-m") + 1] == "2048"
    kvm = render_instance_argv("/x", [], "/s", "a", {}, smp=2, accel="kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_meta_data_and_image_description():
    assert render_meta_data("i-local1") == ("instance-id: i-local1\n"
                                            "local-hostname: go2aliyun-receiver\n")
    desc = render_image_description([("system", "system.qcow2", 20),
                                     ("disk1", "disk1.qcow2", 30)], image_id="m-1",
                                    image_name="img", boot_mode="BIOS")
    assert [(d["device"], d["disk_type"], d["file"]) for d in desc["disks"]] == [
        ("/dev/xvda", "system", "system.qcow2"), ("/dev/xvdb", "data", "disk1.qcow2")]
    assert desc["image_name"] == "img" and desc["boot_mode"] == "BIOS"


def test_qemu_img_progress():
    text = "    (0.00/100%)\r    (12.50/100%)\r    (99.99/100%)\r"
    assert parse_qemu_img_progress(text) == 99
    assert parse_qemu_img_progress("") == 0


@pytest.mark.qemu
@pytest.mark.commands
def test_an_image_that_does_not_boot_fails_with_the_console(tmp_path):
    """The verification boot is real: a blank disk never shows a login prompt, so the
    image is CreateFailed, its folder is never finished, and the error says why."""
    from image_build.cloud import ImageSpec, InstanceSpec, client_token
    from wire import runner
    from wire.errors import CloudError

    cloud = LocalCloud(str(tmp_path / "local"), ports={8080: free_port(), 8703: free_port()},
                       memory_mib=64, verify_timeout=8, poll_interval=0.2)
    blank = str(tmp_path / "blank.qcow2")
    runner.run(["qemu-img", "create", "-q", "-f", "qcow2", blank, "1G"])
    spec = InstanceSpec(blank, "local", "vsw", "sg", "#cloud-config\n",
                        data_disks=[("go2aliyun-target-system", 1)])
    inst_id = cloud.run_instance(spec, client_token("m-v", "instance"))
    try:
        disk = cloud.instance_disks(inst_id)[1]
        snap = cloud.create_snapshot(disk.id, "s", client_token("m-v", "snap"))
        cloud.wait_snapshot(snap)
        image_id = cloud.create_image(ImageSpec("never-boots", [(snap, 1)]),
                                      client_token("m-v", "image"))
        with pytest.raises(CloudError) as e:
            cloud.wait_image(image_id)
        assert e.value.code == "verify.timeout"
        assert "verification boot failed" in e.value.message
        assert cloud.image(image_id)["status"] == "CreateFailed"
        assert not os.path.exists(os.path.join(cloud.output_dir, "never-boots"))
    finally:
        cloud.delete_instance(inst_id)
    assert cloud.instance(inst_id) is None


def test_an_instance_keeps_its_boot_image_when_the_cache_drops_it(tmp_path):
    cached = tmp_path / "appliance-old.qcow2"
    cached.write_bytes(b"QFI\xfb appliance")
    idir = tmp_path / "instances" / "i-1"
    idir.mkdir(parents=True)
    kept = _keep_boot_image(str(cached), str(idir / "boot-image"))
    assert kept == str(idir / "boot-image")
    assert _keep_boot_image(str(cached), kept) == kept  # a restart reuses it
    cached.unlink()  # a newer appliance pruned the cache
    assert (idir / "boot-image").read_bytes() == b"QFI\xfb appliance"
