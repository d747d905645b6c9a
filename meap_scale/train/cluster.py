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


_STARTED_HERE: list[bool] = [False]
"""Whether this process's ``ensure_ray`` started the Ray instance it is connected to (one connection per process)."""


def ensure_ray(new_cluster: bool = False, **init_options) -> None:
    """Join ``RAY_ADDRESS`` if set, or the cluster a `ray start` left running here, else start a local
    instance with its dashboard; ``new_cluster``: always a private one. Says which, and why. ``init_options`` go to
    ``ray.init`` (a new instance's ``num_cpus``, ``log_to_driver``)."""
    import ray

    if ray.is_initialized():
        return
    address, why, starts = joining(new_cluster)
    print(f"meap-scale: {why}", file=sys.stderr, flush=True)
    try:
        ray.init(address=address, **{"log_to_driver": True, **init_options})
    except ConnectionError as error:
        raise ConfigError(f"cannot join a Ray cluster ({error}); set RAY_ADDRESS to the one to use, or pass "
                          f"--new-cluster for a private one") from error
    _STARTED_HERE[0] = starts


def started_here() -> bool:
    """Whether the Ray this process is connected to is an instance ``ensure_ray`` started: then its resources are
    all it will ever have. A joined cluster may grow (an autoscaler, or nodes started by hand)."""
    import ray

    return _STARTED_HERE[0] and ray.is_initialized()


def largest_size() -> dict[str, float] | None:
    """The resources (``CPU``, ``GPU``, ...) the joined cluster's autoscaler may grow it to, from the configuration
    Ray's autoscaler publishes in the GCS (what Ray Train itself reads, through a private accessor); None where the
    cluster has no autoscaler or the accessor is gone."""
    try:
        from ray._private.state import state

        found = state.get_max_resources_from_cluster_config()
    except Exception:  # a private accessor: a Ray that lacks it gives no answer, not an error
        return None
    return {key: float(value) for key, value in found.items()} if found else None


def starts_local_instance(new_cluster: bool) -> bool:
    """Whether ``ensure_ray`` will start a local instance on this machine (whose resources are then known)."""
    import ray

    return not ray.is_initialized() and joining(new_cluster)[2]
