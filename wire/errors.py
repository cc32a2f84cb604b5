"""One error hierarchy for the whole project.

Every error carries a stable ``code`` (used in JSON error bodies and in logs), an
``exit_code`` (one per failure family, used by the command-line tools) and an HTTP
status for the control API. Only the CLI ``main`` functions and the Flask error
handler turn these into exit codes or JSON; everything else raises them, chaining
the cause with ``raise ... from``.

Exit codes (documented in docs/ARCHITECTURE.md and the README):
  0 done, 1 internal error, 2 usage, 3 configuration, 4 preflight check blocked,
  5 external command failed, 6 network / receiver unreachable, 7 authentication or
  trust (token, fingerprint, certificate), 8 data transfer, 9 receiver step failed,
  10 cloud API, 11 disks and layout, 12 conversion and boot verification.
"""


class Go2AliyunError(Exception):
    """Base of every error this project raises on purpose."""

    code = "internal"
    exit_code = 1
    http_status = 500

    def __init__(self, message, code=None, hint=None, **details):
        super(Go2AliyunError, self).__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        self.details = details

    def __str__(self):
        if self.hint:
            return "%s (%s)" % (self.message, self.hint)
        return self.message

    def to_dict(self):
        body = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return body


class UsageError(Go2AliyunError):
    code = "usage"
    exit_code = 2
    http_status = 400


class ConfigError(Go2AliyunError):
    """A value in user_config.json, a flag or an exclude file is not acceptable."""

    code = "config.invalid"
    exit_code = 3
    http_status = 400


class CheckFailed(Go2AliyunError):
    """The preflight found something that blocks the migration."""

    code = "check.blocked"
    exit_code = 4
    http_status = 409


class CommandError(Go2AliyunError):
    """An external command failed (or could not be started)."""

    code = "command.failed"
    exit_code = 5
    http_status = 500

    def __init__(self, message, argv=(), returncode=None, stderr="", **kw):
        super(CommandError, self).__init__(message, **kw)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class CommandNotFound(CommandError):
    code = "command.not_found"


class CommandTimeout(CommandError):
    code = "command.timeout"


class NetworkError(Go2AliyunError):
    code = "network.unreachable"
    exit_code = 6
    http_status = 502


class TrustError(Go2AliyunError):
    """Token, fingerprint or certificate problems: never retried blindly."""

    code = "auth.failed"
    exit_code = 7
    http_status = 401


class TransferError(Go2AliyunError):
    code = "transfer.failed"
    exit_code = 8
    http_status = 500


class ReceiverError(Go2AliyunError):
    """The receiver reported that one of its steps failed."""

    code = "receiver.failed"
    exit_code = 9
    http_status = 500


class StateError(Go2AliyunError):
    """A request does not fit the migration's current state."""

    code = "state.conflict"
    exit_code = 9
    http_status = 409


class CloudError(Go2AliyunError):
    code = "cloud.failed"
    exit_code = 10
    http_status = 502


class DiskError(Go2AliyunError):
    code = "disk.failed"
    exit_code = 11
    http_status = 409


class ConversionError(Go2AliyunError):
    code = "conversion.failed"
    exit_code = 12
    http_status = 500


class VerifyError(ConversionError):
    code = "verify.failed"
