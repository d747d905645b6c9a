"""A real S3 server for the tests: moto's standalone server on 127.0.0.1, in its own process.

Every process of a test session reaches it through the environment, as every node of a real cluster reaches its
object store through its own credentials: ``object_store_environment`` (called by conftest before any Ray starts,
so the session's Ray workers inherit it) points boto, s3fs and pyarrow at a port reserved here, with credentials
that moto accepts and that are never a developer's own. The server starts the first time a test asks for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ports import free_ports

ENV = {"AWS_ACCESS_KEY_ID": "meap-scale-tests", "AWS_SECRET_ACCESS_KEY": "meap-scale-tests",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
"""Besides ``AWS_ENDPOINT_URL``. No instance metadata lookups: they wait for a timeout off EC2."""


def object_store_environment() -> str:
    """Set this process's S3 environment (inherited by every process it starts) and return the endpoint URL."""
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        os.environ.pop(name, None)
    return endpoint


def start_server(endpoint: str, log_path: str, timeout_s: float = 60.0) -> subprocess.Popen:
    """moto's server listening at ``endpoint``, once it answers; the caller stops it."""
    port = endpoint.rsplit(":", 1)[1]
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                                  stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            return server
        except (urllib.error.URLError, ConnectionError, OSError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the S3 server did not start at {endpoint}: see {log_path}")
            time.sleep(0.2)
