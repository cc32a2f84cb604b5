"""A fake Alibaba Cloud (ECS + VPC RPC APIs and the instance metadata service) for tests.

``FakeCloud`` serves HTTP on 127.0.0.1 and a random port, checks every request's
ACS3-HMAC-SHA256 signature, and keeps the state in a ``World`` (see world.py) whose
resources move through realistic lifecycles each time they are described.
"""

from tests.fakecloud.server import OPERATOR_KEY, READONLY_KEY, FakeCloud
from tests.fakecloud.world import ApiError, World

__all__ = ["FakeCloud", "World", "ApiError", "OPERATOR_KEY", "READONLY_KEY"]
