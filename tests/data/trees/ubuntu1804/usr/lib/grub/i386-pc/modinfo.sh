#!/bin/sh

# User-controllable options
grub_modinfo_target_cpu=i386
grub_modinfo_platform=pc
grub_disk_cache_stats=0
grub_boot_time_stats=0
grub_have_font_source=1

# Version
grub_version="2.02"
grub_package="grub"
grub_package_string="GRUB 2.02-2ubuntu8.26"
grub_package_version="2.02-2ubuntu8.26"
grub_package_name="GRUB"
grub_package_bugreport="bug-grub@gnu.org"
