import logging
import os
import signal
import sys

import pytest

from wire import runner
from wire.errors import CommandError, CommandNotFound, CommandTimeout
from wire.logs import register_secret


def test_unit_tests_cannot_run_real_commands():
    with pytest.raises(AssertionError, match="unit test tried to run a real command"):
        runner.run(["true"])


def test_shell_strings_are_refused():
    with pytest.raises(TypeError):
        runner.run("echo hi")


@pytest.mark.commands
def test_run_captures_output_with_c_locale():
    r = runner.run([sys.executable, "-c", "import os; print(os.environ['LC_ALL'])"])
    assert r.ok and r.stdout.strip() == "C"


@pytest.mark.commands
def test_capture_stdout_leaves_stderr_on_the_terminal(capfd):
    code = "import sys; print('result'); sys.stderr.write('progress\\n')"
    r = runner.run([sys.executable, "-c", code], capture="stdout")
    assert (r.stdout, r.stderr) == ("result\n", "")
    assert capfd.readouterr().err == "progress\n"


@pytest.mark.commands
def test_failure_is_typed_and_carries_argv_code_and_stderr():
    with pytest.raises(CommandError) as ei:
        runner.run([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    e = ei.value
    assert e.returncode == 3 and "boom" in e.stderr and e.argv[0] == sys.executable
    assert e.exit_code == 5 and e.code == "command.failed"


@pytest.mark.commands
def test_ok_codes_and_input():
    code = "import sys; sys.stdout.write(sys.stdin.read()); sys.exit(1)"
    r = runner.run([sys.executable, "-c", code], input="abc", ok_codes=(0, 1))
    assert r.returncode == 1 and r.stdout == "abc"


@pytest.mark.commands
def test_missing_command_and_timeout():
    with pytest.raises(CommandNotFound):
        runner.run(["/nonexistent/go2aliyun-no-such-tool"])
    with pytest.raises(CommandTimeout):
        runner.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)


@pytest.mark.commands
def test_secrets_are_redacted_in_logs_and_errors(caplog):
    secret = "s3cr3t-value-xyz"
    register_secret(secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CommandError) as ei:
        code = "import sys; sys.stderr.write(sys.argv[1]); sys.exit(1)"
        runner.run([sys.executable, "-c", code, secret])
    assert secret not in str(ei.value) and secret not in ei.value.stderr
    assert secret not in caplog.text and "***" in caplog.text


@pytest.mark.commands
def test_an_interrupted_run_ends_its_command(tmp_path):
    """A SIGTERM turned into SystemExit (the demo does that) while a command runs: the
    command is terminated and reaped before the exception goes on."""
    pidfile = str(tmp_path / "pid")
    code = ("import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(60)"
            % pidfile)

    def interrupt(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        with pytest.raises(SystemExit):
            runner.run([sys.executable, "-c", code], timeout=50)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    with open(pidfile) as f:
        pid = int(f.read())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
