"""Transient errors are retried with backoff, permanent ones fail at once with the API
code and a hint; the SDK talks to the fake cloud for real."""

import pytest

from image_build.cloud import client_token
from image_build.cloud.retry import Retrier, is_transient
from tests.fakecloud.fixtures import aliyun_cloud
from tests.fakecloud.server import OPERATOR_KEY, READONLY_KEY
from wire.errors import CloudError


@pytest.mark.parametrize("code", ["Throttling", "ServiceUnavailable", "InternalError"])
def test_transient_errors_are_retried_with_growing_backoff(fake, clock, code):
    cloud = aliyun_cloud(fake, clock)
    fake.world.inject(code, action="CreateVpc", times=3)
    vpc_id = cloud.create_vpc("172.16.0.0/16", "x", client_token("m-r", "vpc"))
    assert fake.world.actions() == ["CreateVpc"] * 4
    assert fake.world.summary()["vpcs"] == 1 and cloud.vpc(vpc_id) is not None
    assert len(clock.sleeps) == 3
    # full jitter under a cap that doubles: attempt n waits at most base * 2**n
    assert all(0 <= s <= 2 ** n for n, s in enumerate(clock.sleeps))


def test_any_5xx_is_transient_and_retries_end(fake, clock):
    cloud = aliyun_cloud(fake, clock)
    fake.world.inject("SomethingBroke", action="DescribeZones", times=100, status=502)
    with pytest.raises(CloudError) as e:
        cloud.zones()
    assert e.value.code == "cloud.SomethingBroke" and e.value.exit_code == 10
    assert fake.world.actions() == ["DescribeZones"] * cloud.retrier.attempts


def test_forbidden_ram_is_not_retried_and_names_the_policies(fake, clock):
    cloud = aliyun_cloud(fake, clock, key=READONLY_KEY)
    with pytest.raises(CloudError) as e:
        cloud.create_vpc("172.16.0.0/16", "x", client_token("m-r", "vpc"))
    assert e.value.code == "cloud.Forbidden.RAM"
    assert "AliyunECSFullAccess" in e.value.hint and "AliyunVPCFullAccess" in e.value.hint
    assert fake.world.actions() == ["CreateVpc"] and clock.sleeps == []


def test_a_client_token_reused_with_other_parameters_says_rerun_as_before(fake, clock):
    cloud = aliyun_cloud(fake, clock)
    cloud.create_vpc("172.16.0.0/16", "x", client_token("m-r", "vpc"))
    with pytest.raises(CloudError) as e:
        cloud.create_vpc("10.0.0.0/8", "x", client_token("m-r", "vpc"))
    assert e.value.code == "cloud.IdempotentParameterMismatch"
    assert "settings of the first run" in e.value.hint
    assert fake.world.actions() == ["CreateVpc", "CreateVpc"] and clock.sleeps == []


def test_skewed_clock_says_fix_the_clock(fake, clock):
    fake.clock_offset = -7200
    with pytest.raises(CloudError) as e:
        aliyun_cloud(fake, clock).zones()
    assert e.value.code == "cloud.IllegalTimestamp" and "clock" in e.value.hint


def test_bad_secret_is_not_in_the_error(fake, clock):
    secret = "a-secret-that-must-not-leak"
    with pytest.raises(CloudError) as e:
        aliyun_cloud(fake, clock, key=(OPERATOR_KEY[0], secret)).zones()
    assert e.value.code == "cloud.SignatureDoesNotMatch"
    assert secret not in str(e.value) and "secret_key" in e.value.hint


def test_unreachable_endpoint_is_retried_then_reported(fake, clock):
    cloud = aliyun_cloud(fake, clock)
    fake.stop()
    with pytest.raises(CloudError) as e:
        cloud.zones()
    assert e.value.code == "cloud.unreachable" and len(clock.sleeps) == 5


def test_classification():
    assert is_transient(None, None)
    assert is_transient("Throttling.User", 400)
    assert is_transient("Whatever", 503)
    assert not is_transient("InvalidImageName.Duplicated", 400)
    assert not is_transient("Forbidden.RAM", 403)
    r = Retrier(attempts=3, base=1, cap=2)
    assert all(0 <= r.delay(n) <= 2 for n in range(10))
