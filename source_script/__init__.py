"""go2aliyun source script: runs on the server being migrated.

Python 3.6+ standard library plus click only (it also ships as one zipapp file,
``go2aliyun.pyz``). It reads ``user_config.json`` and ``Excludes/``, checks the
source, gathers the manifest and pushes the data to the receiver.
"""

__version__ = "0.1.0"
