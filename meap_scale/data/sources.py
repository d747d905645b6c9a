"""Corpus sources: the bundled corpus, local files, files at fsspec URLs, and Hugging Face hub datasets.

Each source loads as a ``datasets.Dataset`` with one ``text`` column (one row per document) plus a
fingerprint that changes whenever the content does, so cached tokenizers and blocks never go stale: local
files by content, files at URLs by what their store says of their version (size plus ETag, checksum,
generation or modification time), without downloading them twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from meap_scale.data import remote
from meap_scale.data.errors import DataError
from meap_scale.urls import is_url

BUNDLED = {"kjv": "kjv.jsonl.xz"}
"""Shipped corpora; provenance and licence in docs/corpus.md."""

if TYPE_CHECKING:  # imported where documents are loaded: most processes that import this module never do
    import datasets

_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class Source:
    kind: str
    """``bundled``, ``local``, ``remote`` (fsspec URLs) or ``hub``."""
    builder: str
    """The ``datasets`` builder (json, text, parquet) or the hub dataset name."""
    files: tuple[str, ...]
    config: str | None = None


def bundled_path(name: str) -> Path:
    if name not in BUNDLED:
        raise DataError(f"unknown bundled corpus {name!r}; bundled corpora: {', '.join(BUNDLED)}")
    return Path(str(resources.files("meap_scale.data") / "corpus" / BUNDLED[name]))


_VERSION_FIELDS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "LastModified", "updated", "mtime", "created")
"""What object stores and filesystems report of a file's version, in fsspec's ``info``."""


def _builder_for(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".xz", ".bz2", ".zst")]
    builder = _BUILDERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise DataError(f"{path}: unsupported file type; use one of {', '.join(_BUILDERS)} (optionally compressed)")
    return builder


def _local_files(path: Path) -> tuple[str, ...]:
    if path.is_file():
        return (str(path),)
    files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"data source folder {path} holds no files")
    return tuple(files)


def _remote_source(url: str) -> Source:
    fs, root = remote.filesystem(url)
    if fs.isfile(root):
        found = [root]
    elif fs.isdir(root):
        found = sorted(p for p in fs.find(root) if not p.rsplit("/", 1)[-1].startswith("."))
    else:
        raise DataError(f"data source {url!r} is not a file or folder there")
    if not found:
        raise DataError(f"data source folder {url} holds no files")
    files = tuple(fs.unstrip_protocol(p) for p in found)
    builders = {_builder_for(Path(f.rsplit("/", 1)[-1])) for f in files}
    if len(builders) > 1:
        raise DataError(f"data source folder {url} mixes file types {sorted(builders)}; keep one type per folder")
    return Source("remote", builders.pop(), files)


def resolve_source(source: str) -> Source:
    """Parse ``bundled:NAME``, ``hf:NAME[:CONFIG]``, an fsspec URL (``s3://``, ``gs://``, ``file://``) or a
    local path; fails early on what cannot exist."""
    if is_url(source):
        return _remote_source(source)
    if source.startswith("bundled:"):
        return Source("bundled", "json", (str(bundled_path(source.split(":", 1)[1])),))
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        return Source("hub", name, (), config or None)
    path = Path(source).expanduser()
    if not path.exists():
        hint = f"'hf:{source}' for a hub dataset, " if not source.startswith(("/", ".", "~")) else ""
        raise DataError(f"data source {source!r} is not a file or folder; write {hint}'bundled:kjv' for the "
                        f"bundled corpus, or a path that exists")
    files = _local_files(path.resolve())
    builders = {_builder_for(Path(f)) for f in files}
    if len(builders) > 1:
        raise DataError(f"data source folder {source} mixes file types {sorted(builders)}; keep one type per folder")
    return Source("local", builders.pop(), files)


def _version(url: str) -> str:
    fs, path = remote.filesystem(url)
    info = fs.info(path)
    return json.dumps([url, info.get("size"), *(str(info[k]) for k in _VERSION_FIELDS if k in info)])


_HASHED: dict[tuple, str] = {}
"""Fingerprints of local corpora this process has hashed, by their files' names, sizes and modification times."""


def fingerprint(source: Source) -> str:
    """Content hash of local files; the reported versions of files at URLs; name and config of hub datasets
    (their revision is pinned by the hub cache). A local corpus is read once per process while its files are
    unchanged; each read says so on stderr, so a log tells how often a study hashed its corpus."""
    digest = hashlib.sha256(f"{source.kind}:{source.builder}:{source.config}".encode())
    if source.kind == "remote":
        for url in source.files:
            digest.update(_version(url).encode())
        return digest.hexdigest()[:16]
    stamp = (source.kind, source.builder, source.config,
             *((name, os.stat(name).st_size, os.stat(name).st_mtime_ns) for name in source.files))
    if stamp not in _HASHED:
        print(f"meap-scale: hashing corpus {', '.join(source.files[:3])}{' ...' if len(source.files) > 3 else ''} "
              f"({sum(entry[1] for entry in stamp[3:]):,} bytes)", file=sys.stderr, flush=True)
        for name in source.files:
            with open(name, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        _HASHED[stamp] = digest.hexdigest()[:16]
    return _HASHED[stamp]


def _load_hub(source: Source, cache_dir: str) -> datasets.Dataset:
    import datasets

    try:
        return datasets.load_dataset(source.builder, source.config, split="train", cache_dir=cache_dir)
    except Exception as error:  # the hub client raises many types for "offline" and "not found"
        raise DataError(f"could not load hub dataset {source.builder!r} (config {source.config!r}): "
                        f"{type(error).__name__}: {error}. Offline machines need a local file or 'bundled:kjv'.") from error


def _load_files(source: Source, cache_dir: str) -> datasets.Dataset:
    import datasets

    extra = {"sample_by": "paragraph"} if source.builder == "text" else {}
    try:
        return datasets.load_dataset(source.builder, data_files=list(source.files), split="train",
                                     cache_dir=cache_dir, **extra)
    except ValueError as error:  # raised for files that hold no rows at all
        raise DataError(f"corpus {', '.join(source.files)} has 0 non-empty document(s): {error}") from error


def load_documents(source: Source, text_field: str, cache_dir: str) -> datasets.Dataset:
    """One ``text`` column, one row per non-empty document."""
    if source.kind == "hub":
        dataset = _load_hub(source, cache_dir)
    else:
        dataset = _load_files(source, cache_dir)
    if text_field not in dataset.column_names:
        raise DataError(f"corpus has no column {text_field!r}; its columns are {dataset.column_names} "
                        f"(set data.text_field)")
    dataset = dataset.select_columns([text_field])
    if text_field != "text":
        dataset = dataset.rename_column(text_field, "text")
    dataset = dataset.filter(lambda rows: [bool(t and t.strip()) for t in rows["text"]], batched=True)
    if len(dataset) < 2:
        raise DataError(f"corpus has {len(dataset)} non-empty document(s); training and validation need at least 2")
    return dataset

