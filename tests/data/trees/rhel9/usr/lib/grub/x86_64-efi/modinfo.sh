#!/bin/sh

# User-controllable options
grub_modinfo_target_cpu=x86_64
grub_modinfo_platform=efi
grub_disk_cache_stats=0
grub_boot_time_stats=0
grub_have_font_source=1

# Version
grub_version="2.06"
grub_package="grub"
grub_package_string="GRUB 2.06-77.el9"
grub_package_version="2.06-77.el9"
grub_package_name="GRUB"
grub_package_bugreport="bug-grub@gnu.org"
