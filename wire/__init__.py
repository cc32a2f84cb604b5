"""What the source script and the receiver share.

Kept small and on the Python 3.6 standard library, because it travels inside the
source zipapp to old servers: the error hierarchy with its stable codes, the one
command runner, log set-up with secret redaction, and the wire protocol constants
(API version, manifest schema).
"""

PROTOCOL_VERSION = 1
API_PREFIX = "/v1"
CONTROL_PORT = 8080
DATA_PORT = 8703
