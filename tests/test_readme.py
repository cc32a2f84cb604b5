"""Every command in README.md is run by a test (issue 7: the README's path tried as a new
user would).

:func:`readme_commands` reads README.md's fenced shell blocks (``sh``/``bash``: one
command a line, ``\\`` continuations joined, comments dropped) and its inline code
spans that start with a command (``go2aliyun ...``, ``python3 ...``, ``bash ...``).
:data:`WHERE` maps each of them to where it runs:

* ``("here", "test_name", why)``: a test of this module runs it (help texts, ``init``,
  the ``vi`` step and ``check`` against fixture trees, the install extras);
* ``("test", "tests/path.py::test_name", harness)``: that test runs it, against a local
  harness when the README's command is for a real server or a real cloud (the fake
  Alibaba Cloud of tests/fakecloud, the ``src``/``ecs`` network namespaces);
* ``("ci", ".ci/run", why)``: the CI script runs it itself.

The test fails when the README has a command the table does not place, when the table
places a command the README no longer has, or when it names a test that does not
exist. Besides, every go2aliyun command of the README must parse with the real
command-line (its flags exist), wherever it runs.
"""

import ast
import json
import os
import re
import shlex
import shutil
import sys

import pytest

from wire import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
TREES = os.path.join(REPO, "tests", "data", "trees")
FENCE = re.compile(r"^( *)```(\w*)[ \t]*\n(.*?)^\1```[ \t]*$", re.S | re.M)
SHELL_BLOCKS = ("sh", "bash", "shell", "console")
# An inline code span is a command when its first word is one of these.
COMMAND_WORDS = ("go2aliyun", "go2aliyun-cloud", "go2aliyun-receiver", "python3", "bash",
                 "pip", "docker", "vi", "export", ".venv/bin/python3")

E2E = "tests/test_faults.py::test_migration_survives_faults_then_takes_the_changes"
LOCAL_DEMO = ("tests/image_build/test_local_provider.py::"
              "test_demo_default_mode_migrates_into_the_appliance_vm_and_the_image_boots")
DEMO = ("tests/image_build/dev/test_demo.py::"
        "test_fake_aliyun_demo_makes_a_verified_image_and_leaves_nothing")
AIO = ("tests/source_script/test_allinone.py::"
       "test_all_in_one_makes_the_cloud_image_and_releases_what_it_launched")
STOCK = "test_setup_on_a_stock_debian_12_then_the_commands_and_a_quick_suite"
# The README's test command (run by .ci/run, and on a stock Debian 12 by test_setup).
TEST_COMMAND = ".venv/bin/python3 -m pytest"
DOCKER = "tests/docker/test_containers.py::test_cutover_converts_verifies_and_the_image_boots"
FAKE = "fake Alibaba Cloud (tests/fakecloud) + src/ecs namespaces"

WHERE = {
    # -- the two commands, and the benchmark
    "bash image_build/dev/demo.sh": (
        "test", LOCAL_DEMO, "image_build.dev.demo.run_demo(cloud='local'), what demo.sh runs "
        "after setup.sh: the appliance VM launched, migrate, finish, the image booted"),
    "bash image_build/dev/demo.sh --cloud fake-aliyun": (
        "test", DEMO, "image_build.dev.demo.run_demo(cloud='fake-aliyun'), what demo.sh runs "
        "after setup.sh"),
    "bash image_build/dev/demo.sh --help": ("here", "test_help_texts", "installs nothing"),
    "go2aliyun-cloud --provider local launch": ("test", LOCAL_DEMO, "the demo's launch"),
    "go2aliyun-cloud finish": ("test", LOCAL_DEMO, "the demo's finish (local provider)"),
    ".venv/bin/python3 -m pytest": (
        "ci", ".ci/run", "CI runs exactly this; tests/image_build/test_setup.py runs it (a "
        "quick part) on a stock Debian 12 root after setup.sh"),
    "bash image_build/setup.sh": (
        "test", "tests/image_build/test_setup.py::" + STOCK, "on a stock Debian 12 root"),
    "bash .ci/run": ("ci", ".ci/run", "the CI entry point itself"),
    ".venv/bin/python3 -m bench.run --out bench-results.json": (
        "test", "tests/bench/test_run.py::test_quick_benchmark_covers_every_scenario",
        "bench.run --quick --out FILE (the full run takes 40 min; not in CI); "
        "--help here"),
    # -- migrate a real server: 1. start the receiver
    "pip install 'go2aliyun[cloud,receiver]'": (
        "here", "test_install_extras_and_commands", "the extras and entry points exist "
        "(the suite runs on `pip install -e '.[all]'`)"),
    "pip install 'go2aliyun[cloud]'": ("here", "test_install_extras_and_commands", ""),
    "pip install go2aliyun": ("here", "test_install_extras_and_commands", ""),
    "go2aliyun-cloud --workdir mig1 launch --receiver-image m-xxxx --source-cidr "
    "203.0.113.7 --ram-role ROLE": (
        "test", DEMO, "launch in src with --workdir, --receiver-image, --source-cidr, "
        "--ram-role against the " + FAKE),
    "go2aliyun-cloud launch": ("test", DEMO, FAKE),
    "go2aliyun-cloud --workdir mig1 build-image --base-image <Debian 12 image id>": (
        "test", "tests/image_build/test_buildimage.py::"
        "test_cli_builds_in_a_region_with_keys_from_the_environment",
        "build-image in a region against the " + FAKE),
    "go2aliyun-cloud --provider local build-image": (
        "test", LOCAL_DEMO,
        "the appliance build (image_build.dev.appliance.build) and a local launch of it"),
    "go2aliyun-cloud --workdir mig1 finish": (
        "test", "tests/image_build/test_cli.py::"
        "test_launch_prints_what_the_source_needs_then_cleanup",
        "launch, finish, cleanup through the CLI against the fake cloud"),
    # -- 2. on the server
    "python3 go2aliyun.pyz init": ("here", "test_server_steps_init_edit_check", ""),
    "vi user_config.json": ("here", "test_server_steps_init_edit_check",
                            "the test edits image_name; check refuses it empty before"),
    "python3 go2aliyun.pyz check": ("here", "test_server_steps_init_edit_check",
                                    "fixture trees: exit 0, and 4 with a blocker"),
    "go2aliyun check": ("here", "test_server_steps_init_edit_check", ""),
    "export GO2ALIYUN_TOKEN=<token>": (
        "test", DEMO, "the demo's first migrate gets the token in GO2ALIYUN_TOKEN; "
        "test_token_variable checks the name here"),
    "python3 go2aliyun.pyz migrate --receiver <address> --sync-only": (
        "test", DEMO, "these flags, in src, against the launched receiver (the demo also "
        "passes the fingerprint; the token alone, the receiver proving it knows it: the "
        "console way's tests/source_script/test_session_proof.py and test_vm_uefi_lvm's "
        "appliance launched with no user-data, issue 15)"),
    "go2aliyun-receiver status": (
        "test", "tests/receiver/test_cli.py::test_token_new_and_status_commands", ""),
    "python3 go2aliyun.pyz migrate --cutover": (
        "test", DEMO, "the second pass: the receiver comes from client_data"),
    "go2aliyun migrate --sync-only": ("test", DEMO, ""),
    "go2aliyun migrate": ("test", E2E, ""),
    "go2aliyun": ("here", "test_install_extras_and_commands", "the entry point"),
    "go2aliyun-cloud": ("here", "test_install_extras_and_commands", "the entry point"),
    "go2aliyun-receiver": ("here", "test_install_extras_and_commands", "the entry point"),
    ".venv/bin/python3 -m image_build.dev.pyz": (
        "test", "tests/image_build/dev/test_pyz.py::test_help",
        "builds the zipapp and runs it (with Python 3.6 when found)"),
    # -- 3. the image, cleanup
    "go2aliyun-cloud --workdir mig1 cleanup": ("test", DEMO, "in src, " + FAKE),
    "go2aliyun-cloud cleanup": ("test", DEMO, FAKE),
    # -- the other ways
    "go2aliyun clear": (
        "test", "tests/source_script/test_allinone.py::"
        "test_clear_forgets_a_released_launch_so_a_new_migration_launches",
        "clear after an all-in-one migration whose resources are released"),
    "go2aliyun migrate --ram-role ROLE": (
        "test", "tests/source_script/test_allinone.py::"
        "test_one_step_private_migration_starts_debian12_and_goes_on",
        "all-in-one without --receiver-image (the official Debian 12 image installing the "
        "receiver at first boot) against the " + FAKE + "; with --receiver-image: " + AIO),
    "go2aliyun-receiver serve --disk system=/dev/vdb --disk disk1=/dev/vdc --provider "
    "local --output DIR": (
        "test", E2E, "serve with --disk (loop devices), --provider local, --output"),
    ".venv/bin/python3 -m image_build.dev.docker build": (
        "test", DOCKER, "the tests/docker fixture builds the image (image_build.dev.docker)"),
    "docker logs": (
        "test", "tests/docker/test_containers.py::"
        "test_receiver_container_is_healthy_and_answers_the_source",
        "the token read from the receiver container's log"),
    "go2aliyun-receiver token new": (
        "test", "tests/receiver/test_cli.py::test_token_new_and_status_commands", ""),
}

# Where each go2aliyun command of the README comes from: (words, module of its click
# group). ``python3 go2aliyun.pyz`` is the source side, as ``go2aliyun``.
PROGRAMS = [(("python3", "go2aliyun.pyz"), "source_script.cli"),
            (("go2aliyun",), "source_script.cli"),
            (("go2aliyun-cloud",), "image_build.cli"),
            (("go2aliyun-receiver",), "receiver.cli")]


def readme_commands(text, inline=True):
    """The commands of a README text (see the module docstring), in order, once each;
    without ``inline``, only those of the fenced blocks (complete command lines)."""
    found = []

    def block(m):
        if m.group(2) in SHELL_BLOCKS:
            pending = ""
            for line in m.group(3).splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                line = re.sub(r"\s+#.*$", "", line)
                if line.endswith("\\"):
                    pending += line[:-1] + " "
                    continue
                found.append(" ".join((pending + line).split()))
                pending = ""
        return ""

    rest = FENCE.sub(block, text)
    for span in re.findall(r"`([^`\n]+)`", rest) if inline else ():
        words = span.split()
        if words and words[0] in COMMAND_WORDS:
            found.append(" ".join(words))
    out = []
    for c in found:
        if c not in out:
            out.append(c)
    return out


def _readme():
    with open(README) as f:
        return f.read()


def _test_exists(node):
    """``path.py::name`` names a module-level test function (or a method of a class)."""
    path, _, name = node.partition("::")
    full = os.path.join(REPO, path)
    if not os.path.isfile(full):
        return False
    with open(full) as f:
        tree = ast.parse(f.read())
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name:
            return True
    return False


# ---------------------------------------------------------------- the table itself

def test_the_parser_reads_fences_continuations_comments_and_inline_commands():
    text = ("intro `go2aliyun check` and `user_config.json`\n\n"
            "```sh\nfoo --a 1 \\\n    --b 2   # a comment\n# only a comment\n\nbar\n```\n"
            "   ```python\nimport os\n   ```\n"
            "  ```sh\n  go2aliyun check\n  ```\n")
    assert readme_commands(text) == ["foo --a 1 --b 2", "bar", "go2aliyun check"]


def test_every_readme_command_has_a_place_and_every_place_a_command():
    commands = readme_commands(_readme())
    assert "bash image_build/dev/demo.sh" in commands and TEST_COMMAND in commands
    missing = [c for c in commands if c not in WHERE]
    assert not missing, "README commands no test runs (add them to WHERE): %s" % missing
    stale = [c for c in WHERE if c not in commands]
    assert not stale, "WHERE places commands the README no longer has: %s" % stale


def test_the_table_names_only_tests_and_files_that_exist():
    here = globals()
    bad = []
    for command, (kind, target, _why) in sorted(WHERE.items()):
        if kind == "here":
            ok = target.startswith("test_") and callable(here.get(target))
        elif kind == "test":
            ok = _test_exists(target)
        elif kind == "ci":
            path = os.path.join(REPO, target)
            with open(path) as f:
                script = f.read()
            # the CI script runs the command itself, or is the command
            ok = command in script or command == "bash " + target
        else:
            ok = False
        if not ok:
            bad.append((command, kind, target))
    assert not bad, bad


def _click_command(words):
    """(click group, the words after the program) for a go2aliyun command, else None."""
    import importlib

    for prefix, module in PROGRAMS:
        if tuple(words[:len(prefix)]) == prefix:
            return importlib.import_module(module).cli, words[len(prefix):]
    return None


def _leftover(ctx):
    """The words a group left for its subcommand (click 7 and 8)."""
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = ctx.protected_args
    return list(protected) + list(ctx.args)


def _parse(group, name, args):
    """Parse ``args`` with click down to the last subcommand, running nothing."""
    import click

    ctx = group.make_context(name, list(args), resilient_parsing=False)
    rest = _leftover(ctx)
    while isinstance(ctx.command, click.Group) and rest:
        sub_name, sub, rest = ctx.command.resolve_command(ctx, rest)
        ctx = sub.make_context(sub_name, rest, parent=ctx)
        rest = _leftover(ctx)
    assert not rest, "unexpected arguments %s" % rest
    return ctx


def test_every_go2aliyun_command_of_the_readme_parses():
    """The flags the README's command lines show exist, with the values they show
    (nothing runs)."""
    parsed = 0
    for command in readme_commands(_readme(), inline=False):
        words = shlex.split(command)
        found = _click_command(words)
        if found is None:
            continue
        group, args = found
        if not args:
            continue  # the bare program name in prose
        _parse(group, words[0], args)
        parsed += 1
    assert parsed >= 8


# ---------------------------------------------------------------- run here

def test_install_extras_and_commands():
    """`pip install 'go2aliyun[cloud,receiver]'` / `go2aliyun[cloud]` / `go2aliyun`:
    the project, its extras and its three commands (installed here by setup.sh)."""
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "go2aliyun"
    extras = project["optional-dependencies"]
    for extra in re.findall(r"go2aliyun\[([a-z,]+)\]", _readme()):
        for name in extra.split(","):
            assert name in extras, "README installs the extra %r, pyproject has %s" % (
                name, sorted(extras))
    assert set(project["scripts"]) == {"go2aliyun", "go2aliyun-cloud", "go2aliyun-receiver"}
    for script in project["scripts"]:
        assert runner.which(script), "%s is not installed" % script


def test_the_commands_tests_start_are_those_of_the_python_running_them():
    """The README's test command is ``.venv/bin/python3 -m pytest`` from a new shell, where
    PATH finds Debian's python3 or another Python first (pyenv here): the ``go2aliyun*``
    commands the tests start must be the ones of the Python that runs the tests
    (tests/conftest.py), not an install of another checkout."""
    bindir = os.path.dirname(sys.executable)
    for name in ("go2aliyun", "go2aliyun-cloud", "go2aliyun-receiver", "python3"):
        assert runner.which(name) == os.path.join(bindir, name), (name, runner.which(name))


def test_token_variable():
    """`export GO2ALIYUN_TOKEN=<token>` is what `migrate` reads the token from."""
    from source_script import cli

    (token,) = [p for p in cli.cli.commands["migrate"].params if p.name == "token"]
    (export,) = [c for c in readme_commands(_readme()) if c.startswith("export ")]
    assert export.split()[1].split("=")[0] == token.envvar == "GO2ALIYUN_TOKEN"


@pytest.mark.commands
def test_help_texts():
    """Every program of the README answers --help (demo.sh's explains both modes)."""
    r = runner.run(["bash", os.path.join(REPO, "image_build", "dev", "demo.sh"), "--help"],
                   timeout=60)
    assert "--cloud" in r.stdout and "fake-aliyun" in r.stdout and "local" in r.stdout
    r = runner.run([sys.executable, "-m", "bench.run", "--help"], cwd=REPO, timeout=60)
    assert "--out" in r.stdout and "--quick" in r.stdout
    for argv, expect in ((["go2aliyun", "--help"], "migrate"),
                         (["go2aliyun-cloud", "--help"], "launch"),
                         (["go2aliyun-cloud", "launch", "--help"], "--receiver-image"),
                         (["go2aliyun-receiver", "serve", "--help"], "--provider")):
        r = runner.run([shutil.which(argv[0])] + argv[1:], timeout=60)
        assert expect in r.stdout, (argv, r.stdout)


@pytest.mark.commands
def test_server_steps_init_edit_check(tmp_path):
    """Step 2 up to the migration, in a fresh work folder: init, the edit, check."""
    work = str(tmp_path)

    def go2aliyun(*args):
        return runner.run([shutil.which("go2aliyun")] + list(args), cwd=work, ok_codes=None,
                          timeout=120)

    r = go2aliyun("init")
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(work, "user_config.json"))
    assert os.path.isfile(os.path.join(work, "Excludes", "rsync_excludes_linux.txt"))
    # before the edit: check names the field to fill in (exit 3, configuration)
    r = go2aliyun("check", "--root", os.path.join(TREES, "ubuntu1804"))
    assert r.returncode == 3 and "image_name" in r.stderr, r.stderr
    # `vi user_config.json`
    path = os.path.join(work, "user_config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(image_name="README_IMAGE", system_disk_size=20)
    with open(path, "w") as f:
        json.dump(config, f)
    r = go2aliyun("check", "--root", os.path.join(TREES, "ubuntu1804"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "README_IMAGE" in r.stdout
    # a kernel without virtio blocks: exit 4, the reason named
    r = go2aliyun("check", "--root", os.path.join(TREES, "debian12"))
    assert r.returncode == 4 and "virtio" in r.stdout, r.stdout + r.stderr
