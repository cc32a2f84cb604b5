"""CONVERTING: make the copied system boot on ECS (virtio, serial console, no NVRAM).

``convert(target_root, prepare_result, manifest, system_device, firmware) -> report``
(:mod:`receiver.convert.apply`); decisions in :mod:`receiver.convert.plan` (pure), the
distro tables in :mod:`receiver.convert.distro`, the sandbox in
:mod:`receiver.convert.chroot`, paths of the copy in :mod:`receiver.convert.inroot`, the
final reference check in :mod:`receiver.convert.check`.
"""

from receiver.convert.apply import convert

__all__ = ["convert"]
