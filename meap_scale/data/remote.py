"""Prepared corpora at fsspec URLs: uploaded once, fetched once per node.

A cache at a URL (``s3://``, ``gs://``, ``file://``) is built in a node-local work folder, then uploaded
file by file with ``prepared.json`` last: object stores have no atomic folder rename, so the last file
marks the upload complete, and two nodes preparing the same corpus upload the same bytes (shards are
deterministic). A process that needs the files (a training worker memory-mapping shards, an eval loading
the tokenizer) fetches them once per node into ``$MEAP_SCALE_NODE_CACHE`` (default ``<local cache>/node``)
under a file lock, so the ranks of one node download them once between them: a tokenizer as a folder
(``fetch_folder``), a split's shards file by file (``fetch_files``: an eval reads the validation split only, a
small part of a 40 GB cache). ``fetched_bytes`` counts what this process downloaded.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from meap_scale import urls
from meap_scale.data.errors import DataError

COMPLETE = ".complete"
_FETCHED = {"bytes": 0}


def fetched_bytes() -> int:
    """Bytes this process has downloaded from cache URLs (``fetch_folder`` and ``fetch_files``)."""
    return _FETCHED["bytes"]


def filesystem(url: str):
    """(fsspec filesystem, path inside it); a DataError naming the package an unknown protocol needs."""
    return urls.filesystem(url, DataError, "data location")


def local_cache_root() -> Path:
    """``$MEAP_SCALE_CACHE`` where it names a local folder, else ``~/.cache/meap-scale``."""
    named = os.environ.get("MEAP_SCALE_CACHE")
    return Path(named).expanduser() if named and not urls.is_url(named) else Path.home() / ".cache" / "meap-scale"


def node_cache_root() -> Path:
    return Path(os.environ.get("MEAP_SCALE_NODE_CACHE") or local_cache_root() / "node").expanduser()


def _slot(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def work_folder(cache_url: str) -> Path:
    """Where this node builds what it will upload to ``cache_url`` (the datasets cache lives here too)."""
    return node_cache_root() / "work" / _slot(cache_url)


def exists(url: str) -> bool:
    """Whether ``url`` (a URL or a local path: fsspec reads both) exists."""
    fs, path = filesystem(url)
    return fs.exists(path)


def read_text(url: str) -> str:
    fs, path = filesystem(url)
    with fs.open(path, "r") as handle:
        return handle.read()


def upload_folder(local: Path, url: str, *, last: str) -> None:
    """Every file under ``local`` to the same relative path under ``url``, ``last`` (a relative path) after
    all others: its presence says the upload is complete."""
    fs, root = filesystem(url)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    for name in sorted(files, key=lambda name: name == last):
        target = f"{root.rstrip('/')}/{name}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local / name), target)


def _fetched(url: str) -> Path:
    return node_cache_root() / "fetched" / _slot(url)


def keep_as_fetched(local: Path, url: str) -> None:
    """A folder just uploaded to ``url`` becomes this node's copy of it, so it is not downloaded back."""
    target = _fetched(url)
    if (target / COMPLETE).exists():
        shutil.rmtree(local)
        return
    (local / COMPLETE).write_text(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(local, target)


def fetch_folder(url: str) -> Path:
    """A node-local copy of everything under ``url``, downloaded on first use by one process of the node."""
    from filelock import FileLock

    local = _fetched(url)
    if (local / COMPLETE).exists():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{local}.lock"):
        if (local / COMPLETE).exists():
            return local
        fs, root = filesystem(url)
        root = root.rstrip("/")
        if not fs.isdir(root):
            raise DataError(f"{url} does not exist or is not a folder; prepare the data again "
                            f"(meap-scale data prepare with the run's data options)")
        partial = local.with_name(f"{local.name}.partial-{uuid.uuid4().hex}")
        for remote_path in fs.find(root):
            _download(fs, remote_path, partial / remote_path[len(root) + 1:])
        (partial / COMPLETE).write_text(url)
        shutil.rmtree(local, ignore_errors=True)
        os.rename(partial, local)
    return local


def fetch_files(url: str, names: list[str]) -> Path:
    """The node-local copy of the folder at ``url`` holding at least ``names`` (paths relative to it), each
    downloaded on first use by one process of the node (a file is there whole or not at all); a folder fetched whole
    or uploaded from here already has them."""
    from filelock import FileLock

    local = _fetched(url)
    if all((local / name).exists() for name in names):
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{local}.lock"):
        fs, root = filesystem(url)
        root = root.rstrip("/")
        for name in names:
            if (local / name).exists():
                continue
            if not fs.exists(f"{root}/{name}"):
                raise DataError(f"{url}/{name} does not exist; prepare the data again (meap-scale data prepare "
                                f"with the run's data options)")
            _download(fs, f"{root}/{name}", local / name)
    return local


def _download(fs, remote_path: str, target: Path) -> None:
    """One file to ``target``, complete or not at all (written beside it, then renamed), counted."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")
    fs.get_file(remote_path, str(partial))
    _FETCHED["bytes"] += partial.stat().st_size
    os.replace(partial, target)
