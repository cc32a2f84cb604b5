"""The test hosts ``src`` and ``ecs``: see image_build/dev/netns.py (the demo uses them too)."""

from image_build.dev.netns import NetnsPair, netns_pair, stop_process  # noqa: F401
