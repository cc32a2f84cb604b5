"""The launcher's record of one migration's cloud resources: a small JSON file
(``cloud_state.json`` next to ``client_data`` in the work folder), written atomically
(0600) every time an id is learnt, so a crash at any point leaves every created
resource findable and a rerun resumes.

Keys (names follow the seed's client_data where it has one): ``migration_id``,
``region_id``, ``zone_id``, ``vpc_id``, ``vswitch_id``, ``security_group_id``,
``instance_id``, ``created`` (``{"vpc": bool, "vswitch": bool, "security_group": bool}``:
made by us, so ours to delete; user-supplied ids are never deleted), ``net_mode``
(0 internet, 2 VPC intranet), ``address``, ``public_ip``, ``private_ip``, ``token``,
``tls`` (certificate, key, fingerprint), ``snapshots`` (target disk -> snapshot id),
``image_name``, ``image_id``, ``status`` and ``released`` (what was deleted).
"""

import json
import os

from wire import files
from wire.errors import ConfigError

FILENAME = "cloud_state.json"


class StateFile(object):
    def __init__(self, path):
        self.path = path
        self.data = {}
        if os.path.exists(path):
            try:
                with open(path) as f:
                    self.data = json.load(f)
            except ValueError as e:
                raise ConfigError("%s is not valid JSON: %s" % (path, e),
                                  code="config.state_invalid",
                                  hint="fix or remove the file (after `go2aliyun-cloud "
                                       "cleanup` if resources were made)") from e

    @classmethod
    def in_workdir(cls, workdir):
        return cls(os.path.join(workdir, FILENAME))

    def get(self, key, default=None):
        return self.data.get(key, default)

    def __contains__(self, key):
        return self.data.get(key) not in (None, "", {}, [])

    def set(self, key, value):
        self.data[key] = value
        self.save()

    def update(self, **values):
        self.data.update(values)
        self.save()

    def set_in(self, section, key, value):
        """``state[section][key] = value`` and save."""
        sub = dict(self.data.get(section) or {})
        sub[key] = value
        self.data[section] = sub
        self.save()

    def save(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        files.write_json_atomic(self.path, self.data, mode=0o600)
