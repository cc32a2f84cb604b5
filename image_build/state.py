"""The launcher's record of one migration's cloud resources: a small JSON file
(``cloud_state.json`` next to ``client_data`` in the work folder), written atomically
(0600) every time an id is learnt, so a crash at any point leaves every created
resource findable and a rerun resumes.

Keys (names follow the seed's client_data where it has one): ``migration_id``,
``region_id``, ``zone_id``, ``vpc_id``, ``vswitch_id``, ``security_group_id``,
``instance_id``, ``created`` (``{"vpc": bool, "vswitch": bool, "security_group": bool}``:
made by us, so ours to delete; user-supplied ids are never deleted), ``net_mode``
(0 internet, 2 VPC intranet), ``address``, ``public_ip``, ``private_ip``, ``token``,
``tls`` (certificate, key, fingerprint), ``target_layout`` (what launch asked for: role,
index, name and size of each target disk), ``target_disks`` (the instance's disks proven to
be them: disk id, role, index, size), ``snapshots`` (disk id -> snapshot id),
``image_name``, ``image_id``, ``settings`` (launch's settings, to refuse a changed one),
``in_flight`` (creates begun whose answer is not recorded yet: kind -> ClientToken),
``status`` and ``released`` (what was deleted).

Every resource is also tagged ``go2aliyun:migration=<migration_id>``
(``image_build.cloud.base.MIGRATION_TAG``): an ``in_flight`` entry tells cleanup that a
create may have made something whose id never reached this file; it finds it by the tag.
"""

import json
import os

from wire import files
from wire.errors import CloudError, ConfigError

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

    def begin_create(self, kind, token):
        """Before a create call: ``kind`` (``vpc``, ``snapshot:<disk id>``, ...) is in
        flight, saved before the call goes out."""
        self.set_in("in_flight", kind, token)

    def create(self, kind, token, call):
        """``call()`` (a create sending ``token``) with ``kind`` in flight around it; a
        refusal by the API (4xx: nothing was made) clears the mark again, a lost answer
        leaves it. The caller records the id with :meth:`end_create`."""
        self.begin_create(kind, token)
        try:
            return call()
        except CloudError as e:
            status = e.details.get("http_status")
            if e.details.get("api_code") and status is not None and int(status) < 500:
                self.end_create(kind)
            raise

    def end_create(self, kind, **values):
        """After it answered: its id (``values``) recorded and the in-flight mark gone, in
        one atomic write."""
        flying = dict(self.data.get("in_flight") or {})
        flying.pop(kind, None)
        self.data.update(values)
        self.data["in_flight"] = flying
        self.save()

    def in_flight(self):
        return dict(self.data.get("in_flight") or {})

    def save(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        files.write_json_atomic(self.path, self.data, mode=0o600)
