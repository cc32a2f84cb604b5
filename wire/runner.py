"""The one way this project runs an external command.

* argv lists only, never a shell string;
* ``LC_ALL=C`` so output is parseable;
* logged (debug) with secrets redacted, never a secret in argv (pass secrets on
  stdin or in a file);
* a typed error (:class:`wire.errors.CommandError`) carrying argv, exit code and
  stderr, raised unless the exit code is in ``ok_codes``.

Unit tests replace :data:`_spawn` through the autouse fixture in
``tests/conftest.py`` so that no real command runs unless a test opts in.
"""

import logging
import os
import subprocess

from wire.errors import CommandError, CommandNotFound, CommandTimeout
from wire.logs import redact

log = logging.getLogger(__name__)


class Result(object):
    __slots__ = ("argv", "returncode", "stdout", "stderr")

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    @property
    def ok(self):
        return self.returncode == 0

    def __repr__(self):
        return "Result(argv=%r, returncode=%r)" % (self.argv, self.returncode)


DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE

# The process factory. Tests swap it for one that refuses (tests/conftest.py).
_popen = subprocess.Popen


def _spawn(argv, input, env, cwd, timeout, capture):
    """Start the process and wait for it. Returns (returncode, stdout, stderr)."""
    proc = _popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture and capture != "stdout" else None,
        env=env,
        cwd=cwd,
    )
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    except BaseException:
        # interrupted (Ctrl-C, a SIGTERM turned into SystemExit): the command does not
        # outlive the call that ran it
        _end(proc)
        raise
    return proc.returncode, stdout, stderr


def _end(proc, grace=10):
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def format_argv(argv):
    return redact(" ".join(_quote(a) for a in argv))


def _quote(arg):
    if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def run(argv, input=None, ok_codes=(0,), env=None, cwd=None, timeout=None,
        capture=True, decode=True):
    """Run ``argv`` and return a :class:`Result`.

    ``input`` may be text or bytes (sent on stdin). ``env`` entries are added to
    the current environment (with ``LC_ALL=C``). ``ok_codes=None`` never raises on
    the exit code. ``decode=False`` returns bytes. ``capture=False`` leaves both
    streams on the terminal; ``capture="stdout"`` takes stdout and leaves stderr there
    (a command's progress stays visible while its result is read).
    """
    if isinstance(argv, str):
        raise TypeError("run() takes an argv list, not a shell string")
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    full_env.pop("LANGUAGE", None)
    if env:
        full_env.update(env)
    if isinstance(input, str):
        input = input.encode("utf-8")
    shown = format_argv(argv)
    log.debug("run: %s", shown)
    try:
        rc, out, err = _spawn(argv, input, full_env, cwd, timeout, capture)
    except FileNotFoundError as e:
        raise CommandNotFound(
            "command not found: %s" % argv[0], argv=argv,
            hint="install the package that provides %s" % argv[0],
        ) from e
    except subprocess.TimeoutExpired as e:
        raise CommandTimeout(
            "command timed out after %ss: %s" % (timeout, shown), argv=argv
        ) from e
    if decode:
        out = out.decode("utf-8", "replace") if out is not None else ""
        err = err.decode("utf-8", "replace") if err is not None else ""
    result = Result(argv, rc, out, err)
    if rc != 0:
        log.debug("exit %s from %s: %s", rc, argv[0], redact(err if decode else "")[-2000:])
    if ok_codes is not None and rc not in ok_codes:
        tail = redact((err if decode else err.decode("utf-8", "replace")) or "").strip()
        raise CommandError(
            "%s failed with exit code %s%s" % (shown, rc, (": " + tail[-1000:]) if tail else ""),
            argv=argv, returncode=rc, stderr=redact(tail),
        )
    return result


def start(argv, env=None, cwd=None, **popen_kw):
    """Start a long-running process (rsync with progress, gunicorn, qemu) and return
    the ``subprocess.Popen``; the caller owns it. Same rules as :func:`run`."""
    if isinstance(argv, str):
        raise TypeError("start() takes an argv list, not a shell string")
    argv = [str(a) for a in argv]
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    log.debug("start: %s", format_argv(argv))
    try:
        return _popen(argv, env=full_env, cwd=cwd, **popen_kw)
    except FileNotFoundError as e:
        raise CommandNotFound(
            "command not found: %s" % argv[0], argv=argv,
            hint="install the package that provides %s" % argv[0],
        ) from e


def which(name, path=None):
    """Full path of ``name`` on PATH (plus the sbin folders), or None."""
    import shutil

    search = path or os.environ.get("PATH", "")
    extra = "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=search + os.pathsep + extra)
