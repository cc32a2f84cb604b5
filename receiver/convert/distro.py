"""Distro families: what differs between Debian/Ubuntu, RHEL/CentOS/Rocky/Alma and SUSE
when a copied system is made bootable. Chosen once from the target's os-release
(``ID``, then each of ``ID_LIKE``); one class per family, no distro checks elsewhere.
"""

import os

from receiver.convert.inroot import in_root
from wire import osfamily, parsers
from wire.errors import ConversionError


def read_os_release(root):
    for rel in ("/etc/os-release", "/usr/lib/os-release"):
        p = in_root(root, rel)
        if os.path.isfile(p):
            with open(p, errors="replace") as f:
                return parsers.parse_os_release(f.read())
    return {}


class Family:
    """A family's conversion: the fields of its :mod:`wire.osfamily` row (``name``,
    ``grub_dir``...) as class attributes, and what else differs when converting."""
    row = None
    debconf_grub = False  # BIOS: debconf's grub-pc/install_devices names the boot disk
    keeps_fallback_loader = False  # UEFI: the distro's own EFI/BOOT/BOOTX64.EFI stays
    esp_grub_cfg = False  # UEFI: the real grub.cfg is on the ESP (before the wrapper)

    def __init_subclass__(cls, row, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.row = row
        for key, value in row._asdict().items():
            setattr(cls, key, value)

    def __init__(self, os_release):
        self.os_release = os_release
        self.id = os_release.get("ID", "")
        self.version_id = os_release.get("VERSION_ID", "")

    @property
    def major(self):
        try:
            return int(self.version_id.split(".")[0])
        except ValueError:
            return 0

    @property
    def efi_id(self):
        return osfamily.EFI_DIRS.get(self.id, self.id) or "BOOT"

    def wrapper_style(self, firmware):
        """RHEL 9 (and Fedora 34+) keep a small EFI/<id>/grub.cfg that only loads
        /boot/grub2/grub.cfg; older releases keep the real grub.cfg on the ESP."""
        since = osfamily.EFI_WRAPPER_SINCE
        return firmware == "uefi" and self.esp_grub_cfg and \
            self.major >= since.get(self.id, since[self.name])

    def grub_cfg(self, firmware, efi_dir=None):
        """The grub.cfg that grub-mkconfig must write."""
        if firmware == "uefi" and self.esp_grub_cfg and not self.wrapper_style(firmware):
            return "%s/EFI/%s/grub.cfg" % (efi_dir or "/boot/efi", self.efi_id)
        return self.grub_dir + "/grub.cfg"

    def mkconfig_argv(self, firmware, efi_dir=None):
        return [self.grub_mkconfig, "-o", self.grub_cfg(firmware, efi_dir)]

    def bios_install_argv(self, device):
        return [self.grub_install, "--target=i386-pc", device]

    def efi_install_argv(self, efi_dir, bootloader_id, has_shim):
        """grub-install for UEFI, or None where the signed binaries are kept as they are."""
        if self.efi_signed_flag is None:
            return None
        argv = [self.grub_install, "--target=x86_64-efi", "--efi-directory=" + efi_dir,
                "--bootloader-id=" + bootloader_id, "--no-nvram"]
        if has_shim:
            argv.append(self.efi_signed_flag)
        return argv

    def initramfs_argvs(self, tool, kernels):
        """The commands that rebuild every kernel's initramfs with ``tool`` (a name of
        :data:`wire.osfamily.CONVERTED_INITRAMFS_TOOLS`, found by :func:`initramfs_tool`);
        kernels: [(version, [drivers that are modules])]."""
        if tool == "initramfs-tools":
            return [["update-initramfs", "-u", "-k", "all"]]
        out = []
        for kver, drivers in kernels:
            argv = ["dracut", "-f"]
            if drivers:
                argv += ["--add-drivers", " ".join(drivers)]
            argv += ["--kver", kver, "/boot/" + self.initrd % kver]
            out.append(argv)
        return out


class Debian(Family, row=osfamily.DEBIAN):
    debconf_grub = True

    def mkconfig_argv(self, firmware, efi_dir=None):
        return ["update-grub"]


class RHEL(Family, row=osfamily.RHEL):
    keeps_fallback_loader = True
    esp_grub_cfg = True


class SUSE(Family, row=osfamily.SUSE):
    pass


FAMILIES = (Debian, RHEL, SUSE)


def _is_program(root, path):
    p = in_root(root, path)
    return os.path.isfile(p) and bool(os.stat(p).st_mode & 0o111)


def initramfs_tool(root):
    """The initramfs tool installed in the copy at ``root`` (by its programs, the rows
    of :data:`wire.osfamily.INITRAMFS_TOOLS`); refuses one the conversion cannot run."""
    tool = osfamily.initramfs_tool_of(lambda p: _is_program(root, p))
    if tool not in osfamily.CONVERTED_INITRAMFS_TOOLS:
        raise ConversionError(
            "cannot rebuild the initramfs of the migrated system: %s" % (
                "its initramfs tool is %s" % tool if tool else
                "none of update-initramfs with mkinitramfs, dracut, mkinitcpio, mkinitrd "
                "is installed"),
            code="conversion.unsupported_initramfs", tool=tool,
            hint="go2aliyun rebuilds initramfs images with %s: install one of them on "
            "the source (with the virtio drivers) and migrate again"
            % " or ".join(osfamily.CONVERTED_INITRAMFS_TOOLS))
    return tool


def family_for(os_release):
    """The family class instance for an os-release dict: ``ID`` first, then each
    ``ID_LIKE`` word in order. Refuses an unknown system."""
    row = osfamily.family_of(os_release.get("ID", ""), os_release.get("ID_LIKE", "").split())
    for fam in FAMILIES:
        if fam.row is row:
            return fam(os_release)
    raise ConversionError(
        "cannot convert %s: os-release ID=%r ID_LIKE=%r is not a Debian, RHEL or SUSE "
        "family system" % (os_release.get("PRETTY_NAME") or "this system",
                           os_release.get("ID"), os_release.get("ID_LIKE")),
        code="conversion.unsupported_os",
        hint="go2aliyun converts Debian/Ubuntu, RHEL/CentOS/Rocky/Alma and SUSE systems")


__all__ = ["Family", "Debian", "RHEL", "SUSE", "family_for", "read_os_release",
           "initramfs_tool"]
