"""The planned target disks as typed records (made by :func:`receiver.disks.plan.plan_layout`).

``to_json()`` is the form saved in the state folder (``prepare-layout.json``), returned
by ``prepare`` (``layout``, which conversion reads) and shown in the status: an object
per record with its fields as keys. ``from_json()`` reads it back.
"""

import dataclasses
from dataclasses import dataclass

# Fields the JSON holds only when set: a disk's "extended", a new filesystem's "new".
_ONLY_WHEN_SET = ("extended", "new")


class _Record:
    def to_json(self):
        return dataclasses.asdict(self, dict_factory=lambda items: {
            k: v for k, v in items if v or k not in _ONLY_WHEN_SET})

    @classmethod
    def from_json(cls, data):
        return cls(**data)


@dataclass
class Partition(_Record):
    number: int
    start_bytes: int
    size_bytes: int
    role: str  # fs | swap | esp | bios_boot | lvm
    type: str  # GPT type GUID or MBR type code
    partuuid: str | None
    name: str | None
    bootable: bool
    source: str | None  # the source partition it copies
    fs: str | None  # Filesystem.id
    vg: str | None  # VolumeGroup.name of a PV partition
    logical: bool


@dataclass
class Extended(_Record):
    """The MBR extended partition that holds partitions 5 and up."""
    number: int
    start_bytes: int
    size_bytes: int


@dataclass
class Disk(_Record):
    module: str
    size_bytes: int
    table: str  # gpt | dos | none (one filesystem on the whole disk)
    table_id: str | None
    source_disk: str | None
    partitions: list[Partition]
    whole_disk_fs: str | None
    extended: Extended | None = None

    @classmethod
    def from_json(cls, data):
        return cls(**dict(data, partitions=[Partition.from_json(p) for p in data["partitions"]],
                          extended=data.get("extended") and Extended.from_json(data["extended"])))


@dataclass
class Filesystem(_Record):
    id: str
    module: str
    type: str  # ext2/3/4, xfs, vfat or swap
    uuid: str | None = None
    source_uuid: str | None = None
    label: str | None = None
    source_device: str | None = None
    mountpoint: str | None = None  # in its module
    system_mountpoint: str | None = None  # in the migrated system
    size_bytes: int | None = None
    source_size_bytes: int | None = None
    used_bytes: int | None = None
    need_bytes: int | None = None
    ext_features: list[str] | None = None
    xfs_features: dict | None = None
    inode_size: int | None = None
    block_size: int | None = None
    on: dict | None = None  # {"lv": "vg/lv"} | {"disk": True} | None: on a partition
    new: bool = False  # no source filesystem: a new UUID

    @property
    def lv(self):
        """``vg/lv`` of the logical volume that holds it, or None."""
        return (self.on or {}).get("lv")


@dataclass
class LogicalVolume(_Record):
    name: str
    fs: str
    fixed: bool  # keeps its source size
    source_uuid: str | None
    size_bytes: int | None
    source_size_bytes: int
    need_bytes: int


@dataclass
class VolumeGroup(_Record):
    name: str
    create_name: str  # g2a-<name> while the receiver has a VG of that name
    source_uuid: str | None
    extent_size_bytes: int
    lvs: list[LogicalVolume]
    size_bytes: int | None = None

    @classmethod
    def from_json(cls, data):
        return cls(**dict(data, lvs=[LogicalVolume.from_json(lv) for lv in data["lvs"]]))


@dataclass
class Mount(_Record):
    module: str
    mountpoint: str
    fs: str
    type: str


@dataclass
class Layout(_Record):
    """What every target disk holds. ``device_map`` (source device -> ``{module,
    partition|lv}``), ``id_changes`` (``{kind, old, new, where}``) and ``folded`` are
    reports for conversion and people, kept in their JSON form."""
    version: int
    firmware: str
    modules: list[str]
    disks: list[Disk]
    filesystems: list[Filesystem]
    vgs: list[VolumeGroup]
    mounts: list[Mount]
    device_map: dict[str, dict]
    id_changes: list[dict]
    folded: list[dict]
    notes: list[str]

    @classmethod
    def from_json(cls, data):
        return cls(**dict(
            data, disks=[Disk.from_json(d) for d in data["disks"]],
            filesystems=[Filesystem.from_json(f) for f in data["filesystems"]],
            vgs=[VolumeGroup.from_json(v) for v in data["vgs"]],
            mounts=[Mount.from_json(m) for m in data["mounts"]]))

    def filesystem(self, fs_id):
        return next(f for f in self.filesystems if f.id == fs_id)

    def vg(self, name):
        return next(v for v in self.vgs if v.name == name)
