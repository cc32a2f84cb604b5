"""The preflight pipeline, one for ``check``, ``migrate`` and the all-in-one mode.

:func:`run`: ``user_config.json`` (or ``--config``) with the flag overrides -> the
manifest (:func:`source_script.inventory.collect`) -> the user's ``Excludes/`` and the
rsync filter rules per disk -> the facts (:func:`source_script.check.probe_facts`) ->
the findings (:func:`source_script.check.evaluate`) -> the plan the receiver gets.
``go2aliyun check`` renders the :class:`Preflight` it returns; ``go2aliyun migrate``
stops on its blockers, sends its manifest and plan, and hands its config to the
all-in-one mode. A bad configuration raises :class:`wire.errors.ConfigError`.
"""

import collections
import os

from source_script import check, excludes, inventory
from source_script import overrides as ov


class Preflight(collections.namedtuple(
        "Preflight", "config_path config root manifest findings filters plan")):
    """What the preflight found. ``config`` may hold the AccessKey: never print it."""

    __slots__ = ()

    @property
    def ok(self):
        return not check.blocked(self.findings)

    def report(self):
        """What ``go2aliyun check --json`` prints (no secrets): ``{"ok", "config_file",
        "root", "findings", "filters", "plan"}``."""
        return {"ok": self.ok, "config_file": self.config_path, "root": self.root,
                "findings": self.findings, "filters": self.filters, "plan": self.plan}


def run(config_path=None, workdir=".", root="/", overrides=None):
    """The whole preflight of the source mounted at ``root``; see the module docstring."""
    workdir = workdir or "."
    path = ov.resolve_config_path(config_path, workdir)
    config = ov.effective_config(path, overrides or {})
    manifest = inventory.collect(root)
    user_rules, notes = excludes.read_user_excludes(
        os.path.join(workdir, excludes.EXCLUDES_DIR),
        [d.index for d in config.data_disks if d.src_path and d.src_path.startswith("/")])
    filters, more = excludes.plan_filters(config.data_disks, manifest, user_rules,
                                          excludes.protect_paths(root, workdir, path))
    facts = check.probe_facts(config, root, path)
    facts["exclude_notes"] = list(notes) + list(more)
    findings = check.evaluate(config, manifest, facts)
    return Preflight(path, config, root, manifest, findings, filters,
                     check.build_plan(config, filters, manifest))
