"""``client_data``: what the source remembers between runs (the seed's file).

One JSON object in the work folder, written atomically (temp file, fsync,
rename) with mode 0600, because it names the session's key files. Layout::

    {
      "version": 1,
      "receiver": {"address": "10.0.0.5", "fingerprint": "ab12...", "token": "..."},
      "migration_id": "m-...",
      "session": {"dir": "session", "data_port": 8703, "modules": {...}},
      "pass": {"number": 2, "final": false, "finished": true},
      "disks": {"system": {"state": "synced", "pass": 2, "bytes": 123, "files": 4,
                           "literal_bytes": 100, "updated_at": "..."}},
      "status": "Syncing" | "Synced" | "Converting" | "Finished",
      "image": {...}
    }

The user may write ``receiver.address``, ``receiver.fingerprint`` and
``receiver.token`` by hand (the seed's VPC-intranet flow); the token is dropped
once it has been traded for a session. An empty or missing file is a fresh start.
"""

import json
import os
import time

from wire import files
from wire.errors import ConfigError
from wire.logs import register_secret

FILENAME = "client_data"
SESSION_DIR = "session"
VERSION = 1


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def path_in(workdir):
    return os.path.join(workdir, FILENAME)


def load(workdir):
    """Read ``client_data`` (``{}`` when missing or empty)."""
    p = path_in(workdir)
    try:
        with open(p) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError("%s is not valid JSON: %s" % (p, e),
                          hint="fix it, or run `go2aliyun clear` to start over") from e
    if not isinstance(data, dict):
        raise ConfigError("%s must hold a JSON object" % p,
                          hint="run `go2aliyun clear` to start over")
    token = (data.get("receiver") or {}).get("token")
    if token:
        register_secret(token)
    return data


def save(workdir, data):
    """Write ``client_data`` atomically, mode 0600."""
    data = dict(data)
    data["version"] = VERSION
    p = path_in(workdir)
    files.write_json_atomic(p, data, mode=0o600, sync_dir=True)
    return data


def update(workdir, **changes):
    """Load, merge top-level keys, save; returns the new data."""
    data = load(workdir)
    data.update(changes)
    return save(workdir, data)


def set_disk(workdir, disk, **fields):
    data = load(workdir)
    disks = data.setdefault("disks", {})
    entry = disks.setdefault(disk, {})
    entry.update(fields)
    entry["updated_at"] = now()
    return save(workdir, data)


def session_dir(workdir):
    return os.path.join(workdir, SESSION_DIR)


def clear(workdir):
    """Reset ``client_data`` (the seed's ``--cleardata``) and delete the session keys."""
    sdir = session_dir(workdir)
    if os.path.isdir(sdir):
        for name in os.listdir(sdir):
            os.unlink(os.path.join(sdir, name))
        os.rmdir(sdir)
    return save(workdir, {})
