"""QMP commands with arguments on a running qemu's monitor socket, for tests that
change a VM the local provider started (image_build.cloud.local.qmp sends a command
without arguments only): hot-plug a disk the provider did not make."""

import json
import socket


def execute(sock_path, commands, timeout=10.0):
    """Run ``commands`` ([(name, arguments or None)]) in order on qemu's QMP socket
    ``sock_path``; returns their ``return`` values. The first error raises
    AssertionError with qemu's answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out = []
    try:
        s.connect(sock_path)
        f = s.makefile("rwb")
        json.loads(f.readline().decode("utf-8"))  # the greeting
        for name, args in [("qmp_capabilities", None)] + list(commands):
            msg = {"execute": name}
            if args:
                msg["arguments"] = args
            f.write(json.dumps(msg).encode("utf-8") + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    raise AssertionError("qemu closed its monitor during %s" % name)
                answer = json.loads(line.decode("utf-8"))
                if "error" in answer:
                    raise AssertionError("qemu refused %s %s: %s" % (name, args,
                                                                     answer["error"]))
                if "return" in answer:
                    break
            if name != "qmp_capabilities":
                out.append(answer["return"])
        return out
    finally:
        s.close()


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
