"""go2aliyun receiver: runs on the intermediate instance.

Control API (``app``, gunicorn + TLS on 8080), one-time tokens (``tokens``), TLS
material (``tls``), the persisted migration (``state``), the long steps (``worker``),
the data channel (``datachannel``, TLS on 8703 in front of rsyncd on loopback) and the
command line (``cli``: ``go2aliyun-receiver``). ``disks/`` plans and builds the target
disks.
"""
