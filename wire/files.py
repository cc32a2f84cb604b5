"""Atomic file writes: the one place that writes a file so that a crash leaves either
the old content or the new one, never half of it (a temporary file in the same
folder, fsync, rename; the folder is fsync'd too where asked)."""

import contextlib
import json
import os
import tempfile

from wire.errors import Go2AliyunError


def write_atomic(path, data, mode=0o600, owner=None, sync_dir=False):
    """Write ``data`` (bytes or text) to ``path`` atomically with ``mode``.

    ``owner`` = (uid, gid) to give the new file (e.g. the owner of the file it
    replaces). Raises OSError as the system does (the caller maps ENOSPC)."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path)[:40], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, owner[0], owner[1])
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_json_atomic(path, obj, mode=0o600, sync_dir=False):
    """``obj`` as indented, key-sorted JSON, written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text, mode=mode, sync_dir=sync_dir)


def read_json(path, default=None, code="file.corrupt", hint=None):
    """The JSON document at ``path``, or ``default`` when the file does not exist. A file
    that is not JSON is an error (``code``) naming the file, the place and ``hint``."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except ValueError as e:
        raise Go2AliyunError("%s is not valid JSON: %s" % (path, e), code=code,
                             hint=hint or "restore the file or remove it") from e
