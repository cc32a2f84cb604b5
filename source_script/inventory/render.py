"""The manifest as text for people (``go2aliyun inventory`` without ``--json``)."""


def _size(n):
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def _table(rows, headers):
    rows = [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return lines


def render_text(manifest):
    m = manifest
    o = m["os"]
    out = [
        "System:    %s (id %s, version %s, family %s)" % (
            o.get("pretty_name") or o.get("name") or "unknown", o.get("id"),
            o.get("version_id"), o.get("family")),
        "Host:      %s    root %s    arch %s    firmware %s" % (
            m.get("hostname"), m["root"], m.get("arch"), m["firmware"]),
    ]
    g = m["grub"]
    out.append("GRUB:      %s %s    config %s    install device %s" % (
        g["flavour"], g.get("version") or "", g.get("config_path"), g.get("install_device")))
    out.append("Initramfs: %s    SELinux: %s    rsync: %s" % (
        m.get("initramfs_tool"), m["selinux"]["mode"], m["rsync"].get("version")))
    ci = m["cloud_init"]
    out.append("cloud-init: %s" % (
        ("installed, datasource %s" % (",".join(ci["datasource"]) if ci["datasource"]
                                       else "not set")) if ci["installed"] else "not installed"))
    out.append("")
    out.append("Kernels:")
    drivers = ("virtio_blk", "virtio_net", "virtio_pci", "virtio_scsi", "nvme")
    out += _table([[k["version"] + (" (running)" if k["running"] else ""),
                    k.get("initramfs")] + [k["virtio"].get(d) for d in drivers]
                   for k in m["kernels"]], ["version", "initramfs"] + list(drivers))
    out.append("")
    out.append("Disks:")
    for d in m["disks"]:
        out.append("  %s  %s  table %s  boot code %s" % (
            d["path"], _size(d["size_bytes"]), d["table"], d.get("boot_code")))
        out += ["  " + line for line in _table(
            [[p["path"], _size(p["start_bytes"]), _size(p["size_bytes"]), p["type"],
              ",".join(p["flags"])] for p in d["partitions"]],
            ["partition", "start", "size", "type", "flags"])[1:]]
    out.append("")
    out.append("Filesystems:")
    out += _table([[f["device"], f["type"], f["uuid"], f["label"], _size(f["size_bytes"]),
                    _size(f["used_bytes"]), f["mountpoint"]] for f in m["filesystems"]],
                  ["device", "type", "uuid", "label", "size", "used", "mountpoint"])
    if m["swap"]:
        out.append("")
        out.append("Swap:")
        out += _table([[s["kind"], s["path"], s["uuid"], _size(s["size_bytes"]),
                        "yes" if s["active"] else "no"] for s in m["swap"]],
                      ["kind", "path", "uuid", "size", "active"])
    lvm = m["lvm"]
    if lvm["vgs"]:
        out.append("")
        out.append("LVM:")
        out += _table([[v["vg"] + "/" + v["name"], _size(v["size_bytes"]), v["path"],
                        "yes" if v["active"] else "no"] for v in lvm["lvs"]],
                      ["logical volume", "size", "path", "active"])
    if m["network"]["mac_bound"]:
        out.append("")
        out.append("Network configuration bound to a MAC address (rewritten on conversion):")
        out += ["  %s:%s  %s" % (n["file"], n.get("line", "?"), n["detail"])
                for n in m["network"]["mac_bound"]]
    if m["warnings"]:
        out.append("")
        out.append("Warnings:")
        out += ["  [%s] %s" % (w["probe"], w["message"]) for w in m["warnings"]]
    return "\n".join(out) + "\n"
