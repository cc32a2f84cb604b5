"""The family table: chosen from os-release, and the EFI grub-install each one needs."""

import pytest

from receiver.convert.distro import family_for
from wire.errors import ConversionError


@pytest.mark.parametrize("release, family", [
    ({"ID": "debian", "VERSION_ID": "12"}, "debian"),
    ({"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "18.04"}, "debian"),
    ({"ID": "rocky", "ID_LIKE": "rhel centos fedora", "VERSION_ID": "9.3"}, "rhel"),
    ({"ID": "centos", "ID_LIKE": "rhel fedora", "VERSION_ID": "7"}, "rhel"),
    ({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse", "VERSION_ID": "15.5"}, "suse"),
    ({"ID": "mydistro", "ID_LIKE": "ubuntu debian"}, "debian"),
])
def test_family_from_id_then_id_like(release, family):
    assert family_for(release).name == family


def test_unknown_system_is_refused_by_name():
    with pytest.raises(ConversionError) as e:
        family_for({"ID": "gentoo", "PRETTY_NAME": "Gentoo Linux"})
    assert "Gentoo Linux" in str(e.value) and "gentoo" in str(e.value)


@pytest.mark.parametrize("release, shim, want", [
    ({"ID": "debian"}, True,
     ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
      "--bootloader-id=debian", "--no-nvram", "--uefi-secure-boot"]),
    ({"ID": "debian"}, False,
     ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
      "--bootloader-id=debian", "--no-nvram"]),
    ({"ID": "sles", "VERSION_ID": "15.5"}, True,
     ["grub2-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
      "--bootloader-id=sles", "--no-nvram", "--suse-force-signed"]),
    # RHEL keeps its signed shim + grubx64.efi as installed: no grub-install at all
    ({"ID": "rocky", "VERSION_ID": "9.3"}, True, None),
])
def test_efi_install_argv(release, shim, want):
    fam = family_for(release)
    assert fam.efi_install_argv("/boot/efi", fam.efi_id, shim) == want
