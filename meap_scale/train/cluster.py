"""Which Ray a command uses: the cluster ``RAY_ADDRESS`` names, one a `ray start` left running on this machine,
or a new local instance; and the form of a storage path Ray Train accepts. Read by the pre-flight checks (a new
local instance gets this machine's resources, which can be checked before it starts) and by the trainer."""

from __future__ import annotations

import os
import sys

from meap_scale.spec_base import ConfigError


def storage_uri(path: str) -> str:
    """Ray Train wants absolute local paths; URLs (s3://, gs://, ...) pass through."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def joining(new_cluster: bool) -> tuple[str | None, str, bool]:
    """The address ``ray.init`` will use (None: its own choice), why in words, and whether it starts a
    new local instance."""
    if new_cluster:
        return "local", "starting a private local Ray instance (--new-cluster)", True
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return address, f"joining the Ray cluster at {address} (RAY_ADDRESS is set)", False
    from ray._private.services import find_bootstrap_address

    running = find_bootstrap_address(None)  # the cluster the last `ray start` on this machine left up
    if running:
        return None, (f"joining the local Ray cluster at {running}, started with `ray start` (use --new-cluster "
                      f"for a private one)"), False
    return None, "starting a local Ray instance with its dashboard", True


def ensure_ray(new_cluster: bool = False) -> None:
    """Join ``RAY_ADDRESS`` if set, or the cluster a `ray start` left running here, else start a local
    instance with its dashboard; ``new_cluster``: always a private one. Says which, and why."""
    import ray

    if ray.is_initialized():
        return
    address, why, _ = joining(new_cluster)
    print(f"meap-scale: {why}", file=sys.stderr, flush=True)
    try:
        ray.init(address=address, log_to_driver=True)
    except ConnectionError as error:
        raise ConfigError(f"cannot join a Ray cluster ({error}); set RAY_ADDRESS to the one to use, or pass "
                          f"--new-cluster for a private one") from error


def starts_local_instance(new_cluster: bool) -> bool:
    """Whether ``ensure_ray`` will start a local instance on this machine (whose resources are then known)."""
    import ray

    return not ray.is_initialized() and joining(new_cluster)[2]
