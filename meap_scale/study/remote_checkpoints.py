"""Checkpoints of one-worker runs on an object store: a study on ``s3://`` or ``gs://`` resumes from anywhere.

A study's one-worker runs train in their Tune trial's own process and keep their checkpoints under the store, at
``<store>/_checkpoints/<run_id>/step-N`` (``meap_scale.checkpoints``). Training writes plain folders
(``local_session``): where the store is an object store, a run writes into a local staging folder instead, and
``RemoteRoot`` copies each checkpoint up once it is complete and the newest one down before the run starts, so a
study interrupted on one machine resumes its runs in flight on another (its Tune state is under the store too).

An object store has no rename, so a checkpoint whose upload was cut short would look like any other. Each upload
ends with a marker object (``UPLOADED``) inside its step folder, written after every file: only folders with their
marker count, and once one is complete the older folders beyond the newest ``keep`` (complete or not) are deleted.
The staging folder is a cache of the remote root: a run resumes from the remote root's newest complete checkpoint,
never from a staged one that did not reach it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass

from meap_scale.checkpoints import STEP_PREFIX, UPLOADED, CheckpointError
from meap_scale.urls import filesystem


@dataclass(frozen=True)
class RemoteRoot:
    """One run's checkpoint root at ``url`` (an fsspec URL), staged in the local folder ``staging``."""

    url: str
    staging: str

    def _fs(self):
        return filesystem(self.url, CheckpointError, "checkpoint root")

    def complete_steps(self) -> list[str]:
        """Names of the remote step folders whose upload finished, oldest first."""
        fs, root = self._fs()
        found = fs.glob(posixpath.join(root, STEP_PREFIX + "*", UPLOADED))
        return sorted(posixpath.basename(posixpath.dirname(path)) for path in found)

    def pull_latest(self) -> str | None:
        """The newest complete remote checkpoint as a local folder under ``staging`` (downloaded unless staged
        already, with its marker); None where the remote root has none. Other staged folders are removed."""
        steps = self.complete_steps()
        os.makedirs(self.staging, exist_ok=True)
        newest = steps[-1] if steps else None
        for name in os.listdir(self.staging):
            if name != newest:
                shutil.rmtree(os.path.join(self.staging, name), ignore_errors=True)
        if newest is None:
            return None
        local = os.path.join(self.staging, newest)
        if not os.path.exists(os.path.join(local, UPLOADED)):
            shutil.rmtree(local, ignore_errors=True)
            fs, root = self._fs()
            remote = posixpath.join(root, newest)
            for path in fs.find(remote):
                target = os.path.join(local, *posixpath.relpath(path, remote).split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                fs.get_file(path, target)
        return local

    def push(self, local: str, keep: int = 1) -> None:
        """Upload the complete local checkpoint folder ``local`` as the remote step folder of the same name, its
        marker last, then delete the remote step folders older than the newest ``keep`` complete ones."""
        fs, root = self._fs()
        name = os.path.basename(local.rstrip(os.sep))
        remote = posixpath.join(root, name)
        if fs.exists(remote):
            fs.rm(remote, recursive=True)  # an upload cut short before its marker
        for folder, _, files in os.walk(local):
            for file in files:
                if file == UPLOADED:
                    continue
                relative = os.path.relpath(os.path.join(folder, file), local).replace(os.sep, "/")
                fs.put_file(os.path.join(folder, file), posixpath.join(remote, relative))
        fs.pipe_file(posixpath.join(remote, UPLOADED), b"")
        with open(os.path.join(local, UPLOADED), "wb"):
            pass
        cutoff = (self.complete_steps()[-max(1, keep):] or [name])[0]
        stale = [path for path in fs.glob(posixpath.join(root, STEP_PREFIX + "*"))
                 if posixpath.basename(path) < cutoff]
        if stale:
            fs.rm(stale, recursive=True)
