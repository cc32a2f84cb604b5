"""The one way to reach a file of the system being migrated or converted."""

import os


def target_path(root, *parts):
    """Join ``parts`` under ``root`` (a mounted system, or ``/``).

    Absolute parts are taken as relative to ``root``; ``..`` cannot climb above it.
    ``target_path("/mnt/t", "/etc/fstab") == "/mnt/t/etc/fstab"``.
    """
    root = os.path.abspath(root or "/")
    rel = os.path.normpath(os.path.join("/", *[str(p) for p in parts])).lstrip("/")
    return os.path.join(root, rel) if rel else root
