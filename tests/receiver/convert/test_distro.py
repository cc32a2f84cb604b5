"""The family table: chosen from os-release, and the EFI grub-install each one needs."""

import pytest

from receiver.convert.distro import FAMILIES, family_for
from wire import osfamily, parsers
from wire.errors import ConversionError

TABLE_IDS = [(row, osid) for row in osfamily.FAMILIES for osid in row.ids]


def test_every_family_of_the_table_is_converted():
    assert [fam.row for fam in FAMILIES] == list(osfamily.FAMILIES)


@pytest.mark.parametrize("row, osid", TABLE_IDS, ids=[i for _, i in TABLE_IDS])
def test_source_and_conversion_agree_on_every_id(row, osid):
    """Source (manifest os.family) and receiver (conversion class) agree on every id:
    as ID, as an ID_LIKE word, ID before ID_LIKE; conversion accepts each one."""
    other = next(r for r in osfamily.FAMILIES if r is not row).ids[0]
    for release in ({"ID": osid}, {"ID": "mydistro", "ID_LIKE": "nosuch " + osid},
                    {"ID": osid.upper(), "ID_LIKE": other}):
        source = parsers.os_info(release, "os-release")["family"]
        assert source == row.name
        assert family_for(release).name == source


@pytest.mark.parametrize("release, family", [
    ({"ID": "debian", "VERSION_ID": "12"}, "debian"),
    ({"ID": "ubuntu", "ID_LIKE": "debian", "VERSION_ID": "18.04"}, "debian"),
    ({"ID": "rocky", "ID_LIKE": "rhel centos fedora", "VERSION_ID": "9.3"}, "rhel"),
    ({"ID": "centos", "ID_LIKE": "rhel fedora", "VERSION_ID": "7"}, "rhel"),
    ({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse", "VERSION_ID": "15.5"}, "suse"),
    ({"ID": "mydistro", "ID_LIKE": "ubuntu debian"}, "debian"),
    ({"ID": "pop", "ID_LIKE": "ubuntu debian"}, "debian"),
])
def test_family_from_id_then_id_like(release, family):
    assert family_for(release).name == family


def test_unknown_system_is_refused_by_name():
    assert parsers.os_family("gentoo", ["nosuch"]) == osfamily.OTHER  # on the source too
    with pytest.raises(ConversionError) as e:
        family_for({"ID": "gentoo", "PRETTY_NAME": "Gentoo Linux"})
    assert "Gentoo Linux" in str(e.value) and "gentoo" in str(e.value)
    assert e.value.code == "conversion.unsupported_os"


def test_efi_folder_of_an_id():
    assert family_for({"ID": "rhel"}).efi_id == "redhat"


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
