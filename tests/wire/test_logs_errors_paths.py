import io
import logging

from wire import paths
from wire.errors import CommandError, ConfigError, Go2AliyunError, TrustError
from wire.logs import RedactingFilter, redact, register_secret
from wire.paths import target_path


def test_redact_patterns_without_registration():
    assert "hunter22" not in redact('{"secret_key": "hunter22"}')
    pem = "-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----"
    assert "MIIabc" not in redact("key: " + pem)


def test_filter_masks_registered_secret_in_args():
    register_secret("tok-1234567890")
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s",
                            ("tok-1234567890",), None)
    RedactingFilter().filter(rec)
    assert rec.getMessage() == "token is ***"


def test_error_families_have_distinct_exit_codes():
    assert ConfigError("x").exit_code == 3
    assert TrustError("x").exit_code == 7
    assert CommandError("x").exit_code == 5
    e = Go2AliyunError("bad", code="thing.bad", hint="do y")
    assert e.to_dict() == {"code": "thing.bad", "message": "bad", "hint": "do y"}
    assert str(e) == "bad (do y)"


def test_target_path_stays_under_root():
    assert target_path("/mnt/t", "/etc/fstab") == "/mnt/t/etc/fstab"
    assert target_path("/mnt/t", "../../etc/passwd") == "/mnt/t/etc/passwd"
    assert target_path("/", "etc", "os-release") == "/etc/os-release"
    assert target_path("/mnt/t") == "/mnt/t"


def test_lv_names_double_the_dashes_only_in_the_mapper_name():
    assert paths.dm_path("debian-vg", "swap_1") == "/dev/mapper/debian--vg-swap_1"
    assert paths.dm_path("vg", "my-root") == "/dev/mapper/vg-my--root"
    assert paths.lv_paths("g2a-vg", "root") == ("/dev/g2a-vg/root", "/dev/mapper/g2a--vg-root")


def test_a_secret_in_a_logged_traceback_is_redacted():
    secret = "tb-secret-Zq81x"  # noqa: S105 - a test value
    register_secret(secret)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("tests.wire.traceback")
    log.addHandler(handler)
    try:
        try:
            raise ValueError("cannot use %s here" % secret)
        except ValueError:
            log.exception("failed with %s", secret)
            log.error("again", stack_info=True, exc_info=True)
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "Traceback" in text and "ValueError: cannot use *** here" in text, text
    assert secret not in text
