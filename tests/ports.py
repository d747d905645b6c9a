"""Free TCP ports on 127.0.0.1 for the servers and clusters tests start beside the session's Ray."""

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every probe stays bound until all are chosen (probes closed one by one
    could be handed the same port twice: a GCS and a dashboard once collided on one)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
