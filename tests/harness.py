"""Starting real servers for tests: the classes live in `brokertest` (brokertest/servers.py,
brokertest/waiting.py), which users' test suites get too; this module gives this suite its
names for them and the repository's root.

Every end-to-end test talks to a real server on 127.0.0.1, on a port the OS picks, with a
fresh data directory, through the real clients: `ServerThread` in-process, `ServerProcess` as
`python -m <name>` that a test may SIGTERM or SIGKILL. `wait_until(predicate, timeout)` waits
for a condition with a deadline: no sleep-and-hope.
"""

from brokertest.servers import (LISTENING, ROOT, ServerProcess, ServerThread,  # noqa: F401
                                read_listening_port, read_listening_ports)
from brokertest.waiting import async_wait_until, wait_until  # noqa: F401
