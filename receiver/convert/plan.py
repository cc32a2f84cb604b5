"""Decide how to make a copied system boot on ECS: a pure function of its files.

``plan_conversion(root, prepared, manifest, firmware, system_device)`` reads the target
system's files (through :func:`receiver.convert.inroot.in_root`, never writing) and returns the
plan: the file edits (path, new content or None to remove, reason) and the commands to
run in a chroot (argv, why), in order. :mod:`receiver.convert.apply` carries it out.

What it decides (docs/ARCHITECTURE.md, "Conversion"):

* fstab: every kernel device name (``/dev/sd*``, ``hd*``, ``xvd*``, ``nvme*n*``), PARTUUID
  and changed UUID rewritten to ``UUID=`` of the new filesystem; entries for
  filesystems that were not migrated are commented out; data disks get an entry at
  their old mount point when they had none;
* kernel command line in ``/etc/default/grub`` (and ``grub.d/*.cfg``), BLS entries and
  grubenv ``kernelopts``: ``root=``, ``resume=``, ``rd.lvm.lv=`` resolved,
  ``console=tty0 console=ttyS0,115200n8``, ``net.ifnames=0`` (the first NIC is eth0);
* crypttab, ``/etc/initramfs-tools/conf.d/resume``, debconf ``grub-pc/install_devices``;
* the initramfs gets the virtio (and nvme) drivers for every installed kernel; a kernel
  without virtio_blk/virtio_pci (module or built in) is refused;
* MAC-bound network config removed, DHCP on eth0; cloud-init datasource AliYun with a
  clean state; ``/.autorelabel`` where SELinux is on;
* the boot loader: ``grub-install --target=i386-pc`` on the target system disk (BIOS),
  or the EFI GRUB with shim and the fallback ``EFI/BOOT/BOOTX64.EFI`` (UEFI); grub.cfg
  regenerated once at the end (then :func:`fix_generated_grub_cfg`).
"""

import glob
import os
import re
from dataclasses import asdict, dataclass

from receiver.convert import distro as distro_mod
from receiver.convert.inroot import in_root, read_text
from receiver.convert.refs import DEVICE_NAME_RE, Targets, lv_from_path, split_tag
from wire import osfamily, parsers
from wire.errors import ConversionError

CONSOLE_ARGS = ("console=tty0", "console=ttyS0,115200n8")
ECS_SYSTEM_DISK = "/dev/vda"
NETWORK_TYPES = {"nfs", "nfs4", "cifs", "smbfs", "glusterfs", "ceph", "sshfs",
                 "fuse.sshfs", "9p", "davfs", "lustre", "ocfs2", "gfs2"}
KEPT_TYPES = (osfamily.PSEUDO_FSTYPES - osfamily.MEDIA_FSTYPES) | NETWORK_TYPES
MARK = "go2aliyun"


def read_target(root, rel):
    """Text of a target file, or None when it is missing (symlinks resolved inside the
    copy: :func:`receiver.convert.inroot.in_root`)."""
    return read_text(root, rel)


@dataclass
class Edit:
    """A file of the target: its new content (None: the file is removed), and why."""
    path: str
    content: str | None
    reason: str


@dataclass
class Command:
    """A command run in the chroot of the target, and why."""
    argv: list
    why: str
    env: dict | None = None

    def to_json(self):
        return {k: v for k, v in asdict(self).items() if k != "env" or v}


@dataclass
class ConversionPlan:
    """What :func:`plan_conversion` decides; ``to_json()`` is the report's shape."""
    family: str
    os_id: str
    firmware: str
    system_device: str | None
    kernels: list  # [{"version", "drivers": {driver: status}}]
    edits: list  # [Edit]
    commands: list  # [Command], in the order they run
    grub_cfg: str  # the one grub-mkconfig writes (last)
    notes: list

    def to_json(self):
        return dict(asdict(self), commands=[c.to_json() for c in self.commands])

    @classmethod
    def from_json(cls, doc):
        return cls(**dict(doc, edits=[Edit(**e) for e in doc["edits"]],
                          commands=[Command(**c) for c in doc["commands"]]))


def _edit(edits, path, content, reason):
    edits.append(Edit(path, content, reason))


def _cmd(commands, argv, why, env=None):
    commands.append(Command(list(argv), why, dict(env) if env else None))


def _has_opt(mntops, name):
    return name in (mntops or "").split(",")


def fstab_kept(e):
    """fstab entries that stay as they are: virtual, network, bind mounts, swap files."""
    tag, value = split_tag(e["spec"])
    return e["vfstype"] in KEPT_TYPES or _has_opt(e["mntops"], "bind") \
        or (tag is None and not value.startswith("/dev/"))


# ---------------------------------------------------------------------- fstab

def plan_fstab(text, targets, notes):
    """The converted fstab text (pure). Raises ConversionError when ``/`` cannot be
    resolved."""
    out = []
    referenced = set()
    entries = {e["line"]: e for e in parsers.parse_fstab(text)}
    for n, raw in enumerate(text.splitlines(), 1):
        e = entries.get(n)
        if e is None:  # comments, blank lines and lines that are no entry stay
            out.append(raw)
            continue
        spec, mp, mntops = e["spec"], e["file"], e["mntops"]
        if fstab_kept(e):
            out.append(raw)
            continue
        f = targets.resolve(spec, mp)
        if f is not None:
            referenced.add(f["id"])
            new = targets.new_reference(spec, mp)
            if new and new != spec:
                m = re.match(r"^(\s*)(\S+)(.*)$", raw)
                out.append(m.group(1) + new + m.group(3))
                notes.append("fstab: %s (%s) -> %s" % (spec, mp, new))
            else:
                out.append(raw)
            continue
        if mp == "/":
            raise ConversionError(
                "/etc/fstab: the root filesystem %s names none of the migrated filesystems"
                % spec, code="conversion.unresolved_root",
                hint="the manifest and the prepared disks must both describe /")
        if _has_opt(mntops, "noauto"):
            out.append(raw)
            continue
        out.append("# %s: not migrated, disabled: %s" % (MARK, raw))
        notes.append("fstab: %s (%s) is not on the new disks: entry disabled" % (spec, mp))
    for f in targets.filesystems:
        if f["id"] in referenced or f.get("type") == "swap" or not f.get("uuid"):
            continue
        smp = f.get("system_mountpoint")
        if not smp or smp == "/" or f.get("module", "system") == "system":
            continue
        out.append("UUID=%s %s %s defaults 0 2" % (f["uuid"], smp, f["type"]))
        notes.append("fstab: data disk %s mounted at %s (UUID=%s)" % (f["module"], smp,
                                                                      f["uuid"]))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- kernel command line

def rewrite_cmdline(value, targets, notes, add_console=False, where="cmdline"):
    """Rewrite one kernel command line (pure): root=, resume=, rd.lvm.lv=, console=."""
    tokens = value.split()
    out = []
    for tok in tokens:
        key, eq, val = tok.partition("=")
        if eq and key == "root" and not val.startswith("$"):
            new = targets.new_reference(val, "/")
            if new is None:
                raise ConversionError(
                    "%s: root=%s names none of the migrated filesystems" % (where, val),
                    code="conversion.unresolved_root",
                    hint="fix root= on the source or migrate the root filesystem")
            if new != val:
                notes.append("%s: root=%s -> root=%s" % (where, val, new))
            out.append("root=" + new)
        elif eq and key == "resume":
            new = targets.new_reference(val)
            if new is None:
                notes.append("%s: resume=%s is not on the new disks: removed" % (where, val))
                continue
            if new != val:
                notes.append("%s: resume=%s -> resume=%s" % (where, val, new))
            out.append("resume=" + new)
        elif eq and key == "rd.lvm.lv":
            if val not in targets.lvs:
                notes.append("%s: rd.lvm.lv=%s is not on the new disks: removed"
                             % (where, val))
                continue
            out.append(tok)
        elif eq and key == "console":
            continue
        else:
            out.append(tok)
    if add_console:
        if not any(t.startswith("net.ifnames=") for t in out):
            out.append("net.ifnames=0")
        out.extend(CONSOLE_ARGS)
    return " ".join(out)


_VAR_RE = re.compile(r"^(\s*)(export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(.*)$")
_TERMINAL_RE = re.compile(r"^(\s*)(export\s+)?(GRUB_TERMINAL(?:_OUTPUT|_INPUT)?|"
                          r"GRUB_SERIAL_COMMAND)=(.*)$")
GRUB_TERMINAL = "console serial"
GRUB_SERIAL_COMMAND = "serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"


def _shell_quote(v):
    return '"%s"' % re.sub(r'([\\"`])', r"\\\1", v)


def plan_default_grub(text, targets, notes, is_main, where):
    """/etc/default/grub (``is_main``) or a grub.d/*.cfg file, rewritten (pure). The
    console arguments go into GRUB_CMDLINE_LINUX of the main file, and of any grub.d file
    that sets it (it would override the main one)."""
    lines = []
    for raw in text.splitlines():
        m = _TERMINAL_RE.match(raw)
        if m:  # GRUB talks on the serial console too (ECS has one, and no screen)
            if m.group(3) in ("GRUB_TERMINAL", "GRUB_SERIAL_COMMAND"):
                continue
            raw = "#" + raw.lstrip() + "  # %s: GRUB_TERMINAL is used" % MARK
        lines.append(raw)
    seen_linux = False
    for i, raw in enumerate(lines):
        m = _VAR_RE.match(raw)
        if not m:
            continue
        name = m.group(3)
        value = parsers.unquote_shell(m.group(4))
        if "$" in value.replace("$GRUB_CMDLINE_LINUX", "").replace("${GRUB_CMDLINE_LINUX}", ""):
            notes.append("%s: %s uses shell expansion: left as it is" % (where, name))
            continue
        add = name == "GRUB_CMDLINE_LINUX"
        seen_linux = seen_linux or add
        new = rewrite_cmdline(value, targets, notes, add_console=add, where=where)
        lines[i] = "%s%s%s=%s" % (m.group(1), m.group(2) or "", name, _shell_quote(new))
    if is_main and not seen_linux:
        lines.append("GRUB_CMDLINE_LINUX=%s" % _shell_quote(
            rewrite_cmdline("", targets, notes, add_console=True, where=where)))
    if is_main or re.search(r"^\s*(export\s+)?GRUB_TERMINAL=", text, re.M):
        lines.append("GRUB_TERMINAL=%s" % _shell_quote(GRUB_TERMINAL))
        lines.append("GRUB_SERIAL_COMMAND=%s" % _shell_quote(GRUB_SERIAL_COMMAND))
    return "\n".join(lines) + "\n"


def plan_bls_entry(text, targets, notes, where):
    """A /boot/loader/entries/*.conf file with its ``options`` line rewritten (pure)."""
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        m = re.match(r"^(\s*options\s+)(.*)$", raw)
        if m and "$kernelopts" not in m.group(2):
            lines[i] = m.group(1) + rewrite_cmdline(m.group(2), targets, notes,
                                                    add_console=True, where=where)
    return "\n".join(lines) + "\n"


GRUBENV_SIZE = 1024


def plan_grubenv(text, targets, notes, where):
    """grubenv with ``kernelopts=`` rewritten (RHEL 8), padded back to 1024 bytes; None
    when there is nothing to change."""
    lines = text.rstrip("#").split("\n")
    changed = False
    for i, line in enumerate(lines):
        if line.startswith("kernelopts="):
            lines[i] = "kernelopts=" + rewrite_cmdline(line[len("kernelopts="):], targets,
                                                       notes, add_console=True, where=where)
            changed = True
    if not changed:
        return None
    body = "\n".join(ln for ln in lines if ln != "") + "\n"
    if len(body.encode()) > GRUBENV_SIZE:
        raise ConversionError("%s: kernelopts do not fit the 1024-byte grubenv" % where,
                              code="conversion.grubenv")
    return body + "#" * (GRUBENV_SIZE - len(body.encode()))


def fix_generated_grub_cfg(text, targets):
    """grub.cfg made in a chroot over loop devices (no udev, no /dev/disk/by-uuid) says
    ``root=/dev/loopNpM``: name the filesystems by UUID instead. An LV of a VG made
    under its working name (``root=/dev/mapper/g2a--vg-root``: grub-mkconfig ran before
    release() renamed the VG back) keeps its path, under the source name (Debian's
    initramfs activates the LV that ``root=`` names) (pure)."""
    by_dev = {}
    for f in targets.filesystems:
        if f.get("device") and f.get("uuid"):
            by_dev[f["device"]] = f["uuid"]

    def sub(m):
        dev = m.group(2)
        source = targets.source_lv_path(dev)
        if source:
            return "%s=%s" % (m.group(1), source)
        if dev in by_dev:
            return "%s=UUID=%s" % (m.group(1), by_dev[dev])
        return m.group(0)
    return re.sub(r"\b(root|resume)=(/dev/[^\s'\"]+)", sub, text)


# ---------------------------------------------------------------------- other references

def plan_crypttab(text, targets, notes):
    out = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith("#") or len(fields) < 2:
            out.append(raw)
            continue
        new = targets.new_reference(fields[1])
        if new and new != fields[1]:
            out.append(raw.replace(fields[1], new, 1))
            notes.append("crypttab: %s -> %s" % (fields[1], new))
        else:
            out.append(raw)
    return "\n".join(out) + "\n"


def plan_resume_conf(text, targets, notes):
    """/etc/initramfs-tools/conf.d/resume: RESUME= resolved, or ``none``."""
    out = []
    for raw in text.splitlines():
        m = re.match(r"^(\s*RESUME=)(.*)$", raw)
        if not m:
            out.append(raw)
            continue
        val = parsers.unquote_shell(m.group(2))
        if val in ("", "none", "auto"):
            out.append(raw)
            continue
        new = targets.new_reference(val)
        if new is None:
            notes.append("initramfs resume: %s is not on the new disks: RESUME=none" % val)
            out.append(m.group(1) + "none")
        else:
            out.append(m.group(1) + new)
    return "\n".join(out) + "\n"


def plan_debconf(text, device):
    """debconf's config.dat with ``grub-pc/install_devices`` set to ``device``."""
    out = []
    in_block = False
    for raw in text.splitlines():
        if raw.startswith("Name: "):
            in_block = raw == "Name: grub-pc/install_devices"
        elif in_block and raw.startswith("Value:"):
            raw = "Value: " + device
        out.append(raw)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- kernels and drivers

def _modules_dir(root, kver):
    """The target path of the kernel's module folder, or None."""
    for base in ("/lib/modules", "/usr/lib/modules"):
        if os.path.isdir(in_root(root, base, kver)):
            return base + "/" + kver
    return None


def installed_kernels(root):
    """Kernel versions with an image in /boot (rescue images skipped), sorted."""
    out = []
    for p in glob.glob(in_root(root, "/boot/vmlinuz-*")):
        kver = os.path.basename(p)[len("vmlinuz-"):]
        if "rescue" in kver:
            continue
        out.append(kver)
    return sorted(out)


def kernel_drivers(root, kver):
    """{driver: "module" | "builtin" | "missing"} for the virtio and nvme drivers."""
    mdir = _modules_dir(root, kver)
    modules, builtin = set(), set()
    if mdir:  # the module files present under kernel/ (not modules.dep)
        # os.walk lists names and follows no symlinked folder
        for _dirpath, _dirs, files in os.walk(in_root(root, mdir, "kernel")):
            modules.update(parsers.module_name(n) for n in files if parsers.is_module_file(n))
        builtin = parsers.parse_modules_builtin(
            read_target(root, mdir + "/modules.builtin") or "")
    config = parsers.parse_kernel_config(read_target(root, "/boot/config-" + kver) or "")
    return {d: parsers.driver_status(d, builtin, modules, config)
            for d in osfamily.DRIVERS}


def plan_kernels(root):
    """[(kver, {driver: status})]; refuses a kernel that cannot reach a virtio disk."""
    kernels = installed_kernels(root)
    if not kernels:
        raise ConversionError("no kernel found in %s/boot (vmlinuz-*)" % root,
                              code="conversion.no_kernel",
                              hint="the copied system needs /boot with its kernels")
    out, bad = [], []
    for kver in kernels:
        st = kernel_drivers(root, kver)
        missing = [d for d in osfamily.REQUIRED_DRIVERS if st[d] == "missing"]
        if missing:
            bad.append("%s (no %s: neither a module file nor in modules.builtin)"
                       % (kver, ", ".join(missing)))
        out.append((kver, st))
    if bad:
        raise ConversionError(
            "kernel(s) without virtio drivers cannot boot on ECS: %s" % "; ".join(bad),
            code="conversion.no_virtio",
            hint="install a kernel with virtio (the distro's stock kernel) on the source, "
            "or remove the kernel without it, and migrate again")
    return out


def plan_initramfs_modules(text, drivers):
    """/etc/initramfs-tools/modules with each driver listed (once)."""
    have = set()
    for line in (text or "").splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            have.add(parsers.module_name(s.split()[0]))
    missing = [d for d in drivers if d not in have]
    if not missing:
        return None
    body = (text or "")
    if body and not body.endswith("\n"):
        body += "\n"
    return body + "# %s: drivers of the ECS instance (virtio, nvme)\n" % MARK + \
        "".join(d + "\n" for d in missing)


# ---------------------------------------------------------------------- the rest of the OS

def _strip_lines(text, pattern):
    lines = text.splitlines()
    kept = [ln for ln in lines if not re.match(pattern, ln)]
    if len(kept) == len(lines):
        return None
    return "\n".join(kept) + "\n"


def plan_netplan(text):
    """Drop ``match:`` blocks that match a MAC address and ``set-name:`` lines."""
    lines = text.splitlines()
    out = []
    i = 0
    changed = False
    while i < len(lines):
        ln = lines[i]
        m = re.match(r"^(\s*)match:\s*$", ln)
        if m:
            ind = len(m.group(1))
            j = i + 1
            block = []
            while j < len(lines) and (not lines[j].strip() or
                                      len(lines[j]) - len(lines[j].lstrip()) > ind):
                block.append(lines[j])
                j += 1
            if any("macaddress" in b for b in block):
                i = j
                changed = True
                continue
        if re.match(r"^\s*(set-name|macaddress):", ln):
            changed = True
            i += 1
            continue
        out.append(ln)
        i += 1
    return "\n".join(out) + "\n" if changed else None


IFCFG_ETH0 = ("# %s: DHCP on the first NIC of the ECS instance\n"
              "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nTYPE=Ethernet\n" % MARK)
IFUPDOWN_ETH0 = ("\n# %s: DHCP on the first NIC of the ECS instance\n"
                 "allow-hotplug eth0\niface eth0 inet dhcp\n" % MARK)
CLOUD_INIT_DS = ("# %s: this system now runs on Alibaba Cloud ECS\n"
                 "datasource_list: [ AliYun, None ]\n" % MARK)


def plan_network(root, edits, notes):
    rules = "/etc/udev/rules.d/70-persistent-net.rules"
    if os.path.isfile(in_root(root, rules)):
        _edit(edits, rules, None, "MAC-bound interface names")
    # RHEL ifcfg
    ifcfgs = sorted(glob.glob(in_root(root, "/etc/sysconfig/network-scripts/ifcfg-*")))
    eth0 = False
    for p in ifcfgs:
        name = os.path.basename(p)
        if name == "ifcfg-lo" or name.endswith(".pre-migration"):
            continue
        rel = "/etc/sysconfig/network-scripts/" + name
        text = read_target(root, rel)
        if re.search(r"^\s*DEVICE=\"?eth0\"?\s*$", text, re.M) or name == "ifcfg-eth0":
            eth0 = True
        new = _strip_lines(text, r"^\s*(HWADDR|MACADDR)=")
        if new is not None:
            _edit(edits, rel, new, "MAC-bound network config (HWADDR=)")
    if os.path.isdir(in_root(root, "/etc/sysconfig/network-scripts")) and not eth0:
        _edit(edits, "/etc/sysconfig/network-scripts/ifcfg-eth0", IFCFG_ETH0,
              "DHCP on the first NIC")
    # NetworkManager keyfiles
    for p in sorted(glob.glob(in_root(root,
                                          "/etc/NetworkManager/system-connections/*"))):
        rel = "/etc/NetworkManager/system-connections/" + os.path.basename(p)
        if rel.endswith(".pre-migration"):
            continue
        new = _strip_lines(read_target(root, rel) or "", r"^\s*mac-address=")
        if new is not None:
            _edit(edits, rel, new, "MAC-bound network config (mac-address=)")
    # netplan
    for p in sorted(glob.glob(in_root(root, "/etc/netplan/*.yaml"))):
        rel = "/etc/netplan/" + os.path.basename(p)
        new = plan_netplan(read_target(root, rel) or "")
        if new is not None:
            _edit(edits, rel, new, "MAC-bound network config (match: macaddress)")
    # ifupdown
    text = read_target(root, "/etc/network/interfaces")
    if text is not None and not glob.glob(in_root(root, "/etc/netplan/*.yaml")):
        others = [read_target(root, "/etc/network/interfaces.d/" + os.path.basename(p)) or ""
                  for p in glob.glob(in_root(root, "/etc/network/interfaces.d/*"))]
        new = plan_ifupdown(text, add_eth0=not any(
            re.search(r"^\s*iface\s+eth0\s", t, re.M) for t in others))
        if new is not None:
            _edit(edits, "/etc/network/interfaces", new,
                  "MAC-bound config removed, DHCP on the first NIC")


_IFUPDOWN_STANZA = re.compile(r"^\s*(iface|auto|allow-\S+|mapping|source|source-directory)\b")
_STATIC_OPTS = ("address", "netmask", "gateway", "broadcast", "network", "pointopoint")


def plan_ifupdown(text, add_eth0=True):
    """/etc/network/interfaces: ``hwaddress`` lines dropped; eth0 (the first NIC with
    net.ifnames=0) on DHCP: a static eth0 stanza becomes ``inet dhcp`` without its
    addresses, a missing one is added. None when nothing changes."""
    out = []
    in_eth0 = False
    has_eth0 = False
    for raw in text.splitlines():
        if _IFUPDOWN_STANZA.match(raw):
            in_eth0 = False
            m = re.match(r"^(\s*iface\s+eth0\s+inet\s+)(\S+)(.*)$", raw)
            if m:
                has_eth0 = in_eth0 = True
                if m.group(2) in ("static", "manual"):
                    raw = m.group(1) + "dhcp" + m.group(3)
        elif re.match(r"^\s*hwaddress\b", raw) or (
                in_eth0 and (raw.split() or [""])[0] in _STATIC_OPTS):
            continue
        out.append(raw)
    new = "\n".join(out) + "\n"
    if not has_eth0 and add_eth0:
        new = new.rstrip("\n") + "\n" + IFUPDOWN_ETH0
    return None if new == text else new


def cloud_init_installed(root):
    return any(os.path.exists(in_root(root, p)) for p in
               ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init", "/etc/cloud/cloud.cfg"))


def selinux_enabled(root):
    text = read_target(root, "/etc/selinux/config")
    if not text:
        return False
    m = re.search(r"^\s*SELINUX=\s*(\w+)", text, re.M)
    return bool(m) and m.group(1).lower() in ("enforcing", "permissive")


# ---------------------------------------------------------------------- the plan

def plan_conversion(root, prepared, manifest, firmware="bios", system_device=None,
                    targets=None):
    """Everything conversion will change, decided from the files under ``root``."""
    if firmware not in ("bios", "uefi"):
        raise ConversionError("firmware %r: expected bios or uefi" % firmware,
                              code="conversion.firmware")
    if firmware == "bios" and not system_device:
        raise ConversionError("a BIOS system needs the target system disk for grub-install",
                              code="conversion.no_system_device",
                              hint="pass the device that holds the system module")
    system_disk = (prepared.get("devices") or {}).get("system")
    if firmware == "bios" and system_disk and system_device != system_disk:
        raise ConversionError(
            "grub-install would go to %s, which is not the target system disk %s"
            % (system_device, system_disk), code="conversion.wrong_system_device",
            hint="the boot loader goes only to the disk prepared for the system module")
    targets = targets or Targets(prepared, manifest)
    if targets.root() is None:
        raise ConversionError("the prepared disks hold no filesystem for /",
                              code="conversion.unresolved_root")
    fam = distro_mod.family_for(distro_mod.read_os_release(root))
    tool = distro_mod.initramfs_tool(root)  # what is installed, not the family's usual
    edits, commands, notes = [], [], []

    # references
    fstab = read_target(root, "/etc/fstab")
    if fstab is None:
        raise ConversionError("%s/etc/fstab is missing" % root, code="conversion.no_fstab",
                              hint="the copy of the system is incomplete")
    new = plan_fstab(fstab, targets, notes)
    if new != fstab:
        _edit(edits, "/etc/fstab", new, "filesystem references on the new disks")
    crypttab = read_target(root, "/etc/crypttab")
    if crypttab:
        new = plan_crypttab(crypttab, targets, notes)
        if new != crypttab:
            _edit(edits, "/etc/crypttab", new, "device references on the new disks")
    for rel in ["/etc/default/grub"] + sorted(
            "/etc/default/grub.d/" + os.path.basename(p)
            for p in glob.glob(in_root(root, "/etc/default/grub.d/*.cfg"))):
        text = read_target(root, rel)
        if text is None and rel != "/etc/default/grub":
            continue
        new = plan_default_grub(text or "", targets, notes, rel == "/etc/default/grub", rel)
        if new != text:
            _edit(edits, rel, new, "kernel command line (root=, resume=, serial console)")
    for p in sorted(glob.glob(in_root(root, "/boot/loader/entries/*.conf"))):
        rel = "/boot/loader/entries/" + os.path.basename(p)
        text = read_target(root, rel)
        new = plan_bls_entry(text, targets, notes, rel)
        if new != text:
            _edit(edits, rel, new, "BLS entry kernel command line")
    grubenv = read_target(root, fam.grub_dir + "/grubenv")
    if grubenv and "kernelopts=" in grubenv:
        new = plan_grubenv(grubenv, targets, notes, fam.grub_dir + "/grubenv")
        if new is not None:
            _edit(edits, fam.grub_dir + "/grubenv", new, "kernelopts (BLS)")
    resume = read_target(root, "/etc/initramfs-tools/conf.d/resume")
    if resume is not None:
        new = plan_resume_conf(resume, targets, notes)
        if new != resume:
            _edit(edits, "/etc/initramfs-tools/conf.d/resume", new, "resume device")
    if firmware == "bios" and fam.debconf_grub:
        conf = read_target(root, "/var/cache/debconf/config.dat")
        if conf and "Name: grub-pc/install_devices\n" in conf:
            new = plan_debconf(conf, ECS_SYSTEM_DISK)
            if new != conf:
                _edit(edits, "/var/cache/debconf/config.dat", new,
                      "grub-pc/install_devices is the ECS system disk")

    # drivers
    kernels = plan_kernels(root)
    drivers = list(osfamily.DRIVERS)
    if tool == "initramfs-tools":
        text = read_target(root, "/etc/initramfs-tools/modules")
        new = plan_initramfs_modules(text, drivers)
        if new is not None:
            _edit(edits, "/etc/initramfs-tools/modules", new, "virtio drivers in the initramfs")
    else:
        _edit(edits, "/etc/dracut.conf.d/90-%s-virtio.conf" % MARK,
              '# %s: drivers of the ECS instance\nadd_drivers+=" %s "\n'
              % (MARK, " ".join(drivers)), "virtio drivers in every future initramfs")

    # the rest of the OS
    plan_network(root, edits, notes)
    ci = cloud_init_installed(root)
    if ci:
        _edit(edits, "/etc/cloud/cloud.cfg.d/99-%s-datasource.cfg" % MARK, CLOUD_INIT_DS,
              "cloud-init datasource AliYun")
    if selinux_enabled(root):
        _edit(edits, "/.autorelabel", "", "SELinux relabel on first boot")

    # commands, in order; grub.cfg is made once, last
    efi_dir = "/boot/efi"
    if firmware == "bios":
        _cmd(commands, fam.bios_install_argv(system_device),
             "GRUB for BIOS on the target system disk")
    else:
        plan_efi(root, fam, efi_dir, edits, commands, targets, notes)
    kargs = [(kver, [d for d in drivers if st[d] == "module"]) for kver, st in kernels]
    for argv in fam.initramfs_argvs(tool, kargs):
        _cmd(commands, argv, "initramfs with the virtio drivers")
    if ci:
        _cmd(commands, ["cloud-init", "clean", "--logs"], "cloud-init runs once on ECS")
    grub_cfg = fam.grub_cfg(firmware, efi_dir)
    _cmd(commands, fam.mkconfig_argv(firmware, efi_dir), "grub.cfg made once, at the end",
         env={"GRUB_DISABLE_OS_PROBER": "true"})
    return ConversionPlan(fam.name, fam.id, firmware, system_device,
                          [{"version": k, "drivers": st} for k, st in kernels],
                          edits, commands, grub_cfg, notes)


def plan_efi(root, fam, efi_dir, edits, commands, targets, notes):
    """EFI GRUB (shim kept), the fallback loader, and the RHEL 9 wrapper's UUID."""
    if not os.path.isdir(in_root(root, efi_dir, "EFI")):
        raise ConversionError("UEFI system without %s/EFI on the target" % efi_dir,
                              code="conversion.no_esp",
                              hint="the ESP must be migrated and mounted at %s" % efi_dir)
    vendor = fam.efi_id
    vdir = in_root(root, efi_dir, "EFI", vendor)
    if not os.path.isdir(vdir):
        cands = [d for d in sorted(os.listdir(in_root(root, efi_dir, "EFI")))
                 if d.upper() != "BOOT" and os.path.exists(in_root(root, efi_dir, "EFI", d,
                                                                   "grubx64.efi"))]
        if not cands:
            raise ConversionError("no EFI/<vendor>/grubx64.efi on the ESP of the target",
                                  code="conversion.no_efi_grub")
        vendor = cands[0]
    has_shim = os.path.exists(in_root(root, efi_dir, "EFI", vendor, "shimx64.efi"))
    argv = fam.efi_install_argv(efi_dir, vendor, has_shim)
    if argv:
        _cmd(commands, argv, "EFI GRUB in EFI/%s" % vendor)
    vrel = "%s/EFI/%s" % (efi_dir, vendor)
    brel = "%s/EFI/BOOT" % efi_dir
    if fam.keeps_fallback_loader and os.path.exists(in_root(root, efi_dir, "EFI", "BOOT",
                                                            "BOOTX64.EFI")):
        notes.append("UEFI: the distro's fallback loader EFI/BOOT/BOOTX64.EFI is kept")
    else:
        _cmd(commands, ["mkdir", "-p", brel], "fallback loader folder")
        if has_shim:
            _cmd(commands, ["cp", "-p", vrel + "/shimx64.efi", brel + "/BOOTX64.EFI"],
                 "fallback loader (shim): ECS has no saved boot entries")
            _cmd(commands, ["cp", "-p", vrel + "/grubx64.efi", brel + "/grubx64.efi"],
                 "GRUB next to the fallback shim")
            if os.path.exists(in_root(root, efi_dir, "EFI", vendor, "mmx64.efi")):
                _cmd(commands, ["cp", "-p", vrel + "/mmx64.efi", brel + "/mmx64.efi"],
                     "MOK manager next to the fallback shim")
        else:
            _cmd(commands, ["cp", "-p", vrel + "/grubx64.efi", brel + "/BOOTX64.EFI"],
                 "fallback loader: ECS has no saved boot entries")
    if fam.wrapper_style("uefi"):
        rel = vrel + "/grub.cfg"
        text = read_target(root, rel)
        if text is not None:
            new = _fix_search_uuids(text, targets)
            if new != text:
                _edit(edits, rel, new, "the EFI grub.cfg wrapper names /boot by its UUID")


def _fix_search_uuids(text, targets):
    def sub(m):
        f = targets.resolve("UUID=" + m.group(2))
        if f is not None and f.get("uuid") and f["uuid"] != m.group(2):
            return m.group(1) + f["uuid"]
        return m.group(0)
    return re.sub(r"(search\b[^\n]*--fs-uuid[^\n]*?\s)([0-9A-Fa-f-]{8,})", sub, text)


__all__ = ["plan_conversion", "ConversionPlan", "Edit", "Command", "plan_fstab",
           "rewrite_cmdline", "plan_default_grub", "plan_bls_entry", "plan_grubenv",
           "fix_generated_grub_cfg", "plan_crypttab", "plan_resume_conf", "plan_debconf",
           "plan_kernels", "kernel_drivers", "installed_kernels", "plan_initramfs_modules",
           "plan_netplan", "read_target", "Targets", "lv_from_path", "DEVICE_NAME_RE",
           "CONSOLE_ARGS"]
