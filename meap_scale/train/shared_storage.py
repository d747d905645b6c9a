"""Whether every node of a joined cluster sees the same files at a command's plain-path locations.

A store, a corpus cache or Ray Train's storage given as a plain path (or a ``file://`` URL) is a folder of
whichever node opens it. On one machine that is one folder; on a cluster of several nodes each node has its
own unless the path is a shared mount, and nothing fails at once: trials write store rows to their own disks
(the driver never sees them: retrained on rerun, missing from the report), workers on other nodes cannot open
the driver's prepared data, checkpoints split across nodes. So when a command joins a cluster of more than one
alive node, the driver writes a token into each such folder and a task pinned to every other node reads it
back and answers with a token of its own, which the driver must then find; a folder that fails is refused
before the corpus is prepared or anything trains, naming the node and the fix. URLs of object stores (s3://,
gs://) are the same place from every node and are not probed.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass

from meap_scale.spec_base import ConfigError
from meap_scale.urls import local_path

PROBE_PREFIX = ".meap-scale-shared-"
"""Token files the probe writes (and removes) in each folder it checks."""
PROBE_TIMEOUT_S = 120.0
"""How long the driver waits for every node's answer: a node that starts a worker process slowly is still
probed; one that does not answer in time is named in a warning, not refused (the check could not be done)."""
FIX = ("every node must see the same files there: mount a shared filesystem (NFS, a cloud file share) at that "
       "path on every node, or use an object-store URL (s3://, gs://) instead")


@dataclass(frozen=True)
class Unshared:
    """A folder that a node does not share with the driver, and what the probe saw there."""

    name: str
    path: str
    node: str
    seen: str


def answer_probe(path: str, token: str, node: str) -> str:
    """On a node: what it finds in the driver's token file at ``path``, after writing its own answer beside it.
    Runs in a Ray task; returns ``"ok"`` or what went wrong, in words."""
    try:
        with open(os.path.join(path, PROBE_PREFIX + token)) as handle:
            found = handle.read()
    except FileNotFoundError:
        return "the token file the driver wrote there is missing: this node has a folder of its own at that path"
    except OSError as error:
        return f"cannot read the driver's token file there ({type(error).__name__}: {error})"
    if found != token:
        return f"the token file holds {found[:40]!r}, not the driver's token"
    try:
        with open(os.path.join(path, f"{PROBE_PREFIX}{token}.{node}"), "w") as handle:
            handle.write(node)
    except OSError as error:
        return f"cannot write there ({type(error).__name__}: {error})"
    return "ok"


def _write_tokens(folders: dict[str, str], token: str) -> None:
    for name, path in folders.items():
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, PROBE_PREFIX + token), "w") as handle:
                handle.write(token)
        except OSError as error:
            raise ConfigError(f"cannot write to the {name} folder {path} ({type(error).__name__}: {error})") from error


def _remove_tokens(folders: dict[str, str], token: str) -> None:
    for path in folders.values():
        for entry in os.listdir(path) if os.path.isdir(path) else ():
            if entry.startswith(PROBE_PREFIX + token):
                try:
                    os.remove(os.path.join(path, entry))
                except OSError:
                    pass  # another process's probe of the same folder removed it: nothing of ours is left


def _other_nodes() -> list[dict]:
    import ray

    here = ray.get_runtime_context().get_node_id()
    return [node for node in ray.nodes() if node.get("Alive") and node["NodeID"] != here]


def _node_label(node: dict) -> str:
    return f"{node.get('NodeManagerAddress', '?')} ({node['NodeID'][:12]})"


def probe(folders: dict[str, str], nodes: list[dict]) -> tuple[list[Unshared], list[str]]:
    """Probe every folder from every node: the folders some node does not share, and the nodes that did not
    answer within ``PROBE_TIMEOUT_S``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    _write_tokens(folders, token)
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(answer_probe)
        pending = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(path, token, node["NodeID"]): (name, path, node)
                   for node in nodes for name, path in folders.items()}
        done, late = ray.wait(list(pending), num_returns=len(pending), timeout=PROBE_TIMEOUT_S)
        unshared = []
        for ref in done:
            name, path, node = pending[ref]
            seen = _outcome(ref)
            if seen == "ok" and not os.path.exists(os.path.join(path, f"{PROBE_PREFIX}{token}.{node['NodeID']}")):
                seen = "the node wrote its answer there, but the driver does not find it"
            if seen != "ok":
                unshared.append(Unshared(name, path, _node_label(node), seen))
        return unshared, sorted({_node_label(pending[ref][2]) for ref in late})
    finally:
        _remove_tokens(folders, token)


def _outcome(ref) -> str:
    import ray

    try:
        return ray.get(ref)
    except Exception as error:  # the task could not run there (node died, no worker): nothing was probed
        return f"the probe task failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def check_shared_storage(locations: dict[str, str | None]) -> None:
    """Refuse plain-path ``locations`` (name -> path or URL) that some other alive node of the joined cluster does
    not share (module docstring); nothing to do without Ray or on a one-node cluster."""
    import ray

    folders = {name: folder for name, location in locations.items() if (folder := local_path(location))}
    if not folders or not ray.is_initialized():
        return
    nodes = _other_nodes()
    if not nodes:
        return
    unshared, late = probe(folders, nodes)
    if late:
        print(f"meap-scale: could not check shared storage on node(s) {', '.join(late)}: no answer within "
              f"{PROBE_TIMEOUT_S:.0f} s", file=sys.stderr, flush=True)
    if unshared:
        lines = [f"  the {u.name} at {u.path}, seen from node {u.node}: {u.seen}" for u in unshared]
        raise ConfigError("this cluster has several nodes, and some do not share this command's folders with the "
                          "driver:\n" + "\n".join(lines) + f"\n{FIX}")


def join_checked(new_cluster: bool, locations: dict[str, str | None]) -> None:
    """Join an existing cluster now and check ``locations`` on its nodes (``check_shared_storage``), before the
    caller prepares a corpus; a new local instance is one node with nothing to share, and starts later as before."""
    from meap_scale.train.cluster import ensure_ray, starts_local_instance

    if starts_local_instance(new_cluster):
        return
    ensure_ray(new_cluster)
    check_shared_storage(locations)
