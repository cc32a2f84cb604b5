"""Distro families: what differs between Debian/Ubuntu, RHEL/CentOS/Rocky/Alma and SUSE
when a copied system is made bootable. Chosen once from the target's os-release
(``ID``, then each of ``ID_LIKE``); one class per family, no distro checks elsewhere.
"""

import os

from wire import parsers
from wire.errors import ConversionError
from wire.paths import target_path

VIRTIO_DRIVERS = ("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi",
                  "virtio_net")
EXTRA_DRIVERS = ("nvme",)
# Without these a kernel cannot reach its root disk on ECS.
REQUIRED_DRIVERS = ("virtio_pci", "virtio_blk")

# os-release ID -> EFI folder name (EFI/<name>/)
EFI_IDS = {"debian": "debian", "ubuntu": "ubuntu", "rhel": "redhat", "centos": "centos",
           "rocky": "rocky", "almalinux": "almalinux", "ol": "redhat", "fedora": "fedora",
           "sles": "sles", "opensuse-leap": "opensuse", "opensuse": "opensuse"}


def read_os_release(root):
    for rel in ("/etc/os-release", "/usr/lib/os-release"):
        p = target_path(root, rel)
        if os.path.isfile(p):
            with open(p, errors="replace") as f:
                return parsers.parse_os_release(f.read())
    return {}


class Family(object):
    name = None
    ids = ()
    grub_dir = "/boot/grub2"
    grub_install = "grub2-install"
    grub_mkconfig = "grub2-mkconfig"
    initramfs_tool = "dracut"
    # EFI GRUB: None means the distro's signed binaries are used as they are (no
    # grub-install); otherwise the flag that keeps the signed chain with shim.
    efi_signed_flag = None

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
        return EFI_IDS.get(self.id, self.id or "BOOT")

    def grub_cfg(self, firmware, efi_dir=None):
        """The grub.cfg that grub-mkconfig must write."""
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

    def initramfs_argvs(self, kernels):
        """kernels: [(version, [drivers that are modules])]."""
        out = []
        for kver, drivers in kernels:
            argv = ["dracut", "-f"]
            if drivers:
                argv += ["--add-drivers", " ".join(drivers)]
            argv += ["--kver", kver, "/boot/initramfs-%s.img" % kver]
            out.append(argv)
        return out


class Debian(Family):
    name = "debian"
    ids = ("debian", "ubuntu", "linuxmint", "raspbian", "kali", "devuan")
    grub_dir = "/boot/grub"
    grub_install = "grub-install"
    grub_mkconfig = "grub-mkconfig"
    initramfs_tool = "initramfs-tools"
    efi_signed_flag = "--uefi-secure-boot"

    def mkconfig_argv(self, firmware, efi_dir=None):
        return ["update-grub"]

    def initramfs_argvs(self, kernels):
        return [["update-initramfs", "-u", "-k", "all"]]


class RHEL(Family):
    name = "rhel"
    ids = ("rhel", "centos", "rocky", "almalinux", "ol", "fedora", "amzn", "anolis",
           "alinux", "openEuler", "euleros")

    def wrapper_style(self, firmware):
        """RHEL 9 (and Fedora 34+) keep a small EFI/<id>/grub.cfg that only loads
        /boot/grub2/grub.cfg; older releases keep the real grub.cfg on the ESP."""
        if firmware != "uefi":
            return False
        if self.id == "fedora":
            return self.major >= 34
        return self.major >= 9

    def grub_cfg(self, firmware, efi_dir=None):
        if firmware == "uefi" and not self.wrapper_style(firmware):
            return "%s/EFI/%s/grub.cfg" % (efi_dir or "/boot/efi", self.efi_id)
        return "/boot/grub2/grub.cfg"


class SUSE(Family):
    name = "suse"
    ids = ("sles", "sled", "opensuse-leap", "opensuse-tumbleweed", "opensuse", "suse")
    efi_signed_flag = "--suse-force-signed"


FAMILIES = (Debian, RHEL, SUSE)


def family_for(os_release):
    """The family class instance for an os-release dict: ``ID`` first, then each
    ``ID_LIKE`` word in order. Refuses an unknown system."""
    candidates = [os_release.get("ID", "")] + os_release.get("ID_LIKE", "").split()
    for cid in candidates:
        for fam in FAMILIES:
            if cid and (cid in fam.ids or cid.lower() in fam.ids):
                return fam(os_release)
    raise ConversionError(
        "cannot convert %s: os-release ID=%r ID_LIKE=%r is not a Debian, RHEL or SUSE "
        "family system" % (os_release.get("PRETTY_NAME") or "this system",
                           os_release.get("ID"), os_release.get("ID_LIKE")),
        code="conversion.unsupported_os",
        hint="go2aliyun converts Debian/Ubuntu, RHEL/CentOS/Rocky/Alma and SUSE systems")


__all__ = ["Family", "Debian", "RHEL", "SUSE", "family_for", "read_os_release",
           "VIRTIO_DRIVERS", "EXTRA_DRIVERS", "REQUIRED_DRIVERS"]
