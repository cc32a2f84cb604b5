from tests.fakecloud.fixtures import clock, cloud, fake  # noqa: F401
