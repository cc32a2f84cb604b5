"""QMP commands with arguments for tests that change a VM the local provider started
(image_build.cloud.local.qmp_execute): hot-plug a disk the provider did not make."""

from image_build.cloud.local import qmp_execute as execute


def hotplug_disk(sock_path, image, serial, fmt="raw"):
    """Attach ``image`` to the running VM as one more virtio disk with ``serial`` (the
    guest sees /dev/disk/by-id/virtio-<serial>); the device id is ``serial``."""
    node = "hp-" + serial
    execute(sock_path, [
        ("blockdev-add", {"driver": fmt, "node-name": node,
                          "file": {"driver": "file", "filename": image}}),
        ("device_add", {"driver": "virtio-blk-pci", "drive": node, "id": serial,
                        "serial": serial}),
    ])
    return serial


def devices(sock_path):
    """The ids of qemu's PCI devices on bus 0 (``query-pci``)."""
    buses = execute(sock_path, [("query-pci", None)])[0]
    return [d.get("qdev_id") for b in buses for d in b.get("devices", [])]
