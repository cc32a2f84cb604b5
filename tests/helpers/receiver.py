"""``go2aliyun-receiver serve`` as a process inside the `ecs` namespace, for the
end-to-end tests (tests/helpers/netns.py makes the namespaces): the one in
image_build/dev/netns.py, which the benchmark uses too."""

from image_build.dev.netns import REPO, tail_of
from image_build.dev.netns import ReceiverProcess as Receiver

__all__ = ["REPO", "Receiver", "tail_of"]
