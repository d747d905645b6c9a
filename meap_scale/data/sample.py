"""A corpus read in a bounded sample, without preparing it: the first documents of its first files and an
estimate of the text it holds in all, for the checks that must answer in seconds what preparation would
find out in hours (``meap_scale.preflight``: the tokens a corpus gives, the eval items its text builds).

Local files, bundled corpora and files at fsspec URLs are read from their start (decompressed where their
name says ``.gz``, ``.xz`` or ``.bz2``); the whole corpus's text is the sample's share of the bytes read,
scaled to every file's size (a Parquet file's by its row count). A hub dataset has no sample here: reading
one needs the network and the hub's own loader, so its checks say they were not made.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
from dataclasses import dataclass
from typing import Iterator

from meap_scale.config import DataSpec
from meap_scale.data import remote, sources
from meap_scale.data.errors import DataError

SAMPLE_BYTES = 4 << 20
"""Text read for a sample: enough for the longest eval context of the paper preset many times over, and
for a BPE's tokens per byte to settle; seconds to read and tokenise."""
_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


@dataclass(frozen=True)
class CorpusSample:
    texts: tuple[str, ...]
    """The first non-empty documents, up to ``SAMPLE_BYTES`` of UTF-8 text."""
    text_bytes: int
    """UTF-8 bytes of ``texts``."""
    total_text_bytes: float
    """The corpus's text in all: exact when the sample is the whole corpus, else estimated (``estimated``)."""
    estimated: bool


class _Counting(io.RawIOBase):
    """A file that counts the bytes read through it: how much of a compressed file a sample used."""

    def __init__(self, handle) -> None:
        self.handle, self.read_bytes = handle, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.handle.read(len(buffer))
        buffer[:len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def _documents(text: io.TextIOBase, builder: str, field: str) -> Iterator[str]:
    if builder == "text":  # the datasets text builder with sample_by="paragraph": blank-line separated
        paragraph: list[str] = []
        for line in text:
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "".join(paragraph)
                paragraph = []
        if paragraph:
            yield "".join(paragraph)
        return
    for line in text:
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"corpus line is not JSON ({error}): {line[:80]!r}") from error
            value = record.get(field) if isinstance(record, dict) else None
            if value is None and isinstance(record, dict) and field not in record:
                raise DataError(f"corpus has no column {field!r}; its columns are {sorted(record)} "
                                f"(set data.text_field)")
            if isinstance(value, str) and value.strip():
                yield value


def _read_lines_file(fs, path: str, size: int, builder: str, field: str,
                     budget: int) -> tuple[list[str], float, bool]:
    """(documents, the share of the file's ``size`` bytes they took, whether the file was read to its end)."""
    opener = next((open_ for suffix, open_ in _OPENERS.items() if path.endswith(suffix)), None)
    with fs.open(path, "rb") as handle:
        counting = _Counting(handle)
        raw = io.BufferedReader(counting, 1 << 16)
        stream = opener(raw) if opener else raw
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        found, used = [], 0
        for document in _documents(text, builder, field):
            found.append(document)
            used += len(document.encode())
            if used >= budget:
                return found, min(1.0, counting.read_bytes / max(size, 1)), False
    return found, 1.0, True


def _read_parquet(fs, path: str, field: str, budget: int) -> tuple[list[str], float, bool]:
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        if field not in parquet.schema_arrow.names:
            raise DataError(f"corpus has no column {field!r}; its columns are {parquet.schema_arrow.names} "
                            f"(set data.text_field)")
        total, rows, found, used = parquet.metadata.num_rows or 1, 0, [], 0
        for batch in parquet.iter_batches(columns=[field], batch_size=256):
            for value in batch.column(0).to_pylist():
                rows += 1
                if isinstance(value, str) and value.strip():
                    found.append(value)
                    used += len(value.encode())
                if used >= budget:
                    return found, rows / total, False
    return found, 1.0, True


def sample_corpus(spec: DataSpec, budget: int = SAMPLE_BYTES) -> CorpusSample | None:
    """The first ``budget`` bytes of text of ``spec``'s corpus and its estimated size; None for a hub
    dataset. Raises DataError where the corpus cannot be read (the same errors preparation would give)."""
    source = sources.resolve_source(spec.source)
    if source.kind == "hub":
        return None
    fs = remote.filesystem(source.files[0])[0]
    paths = [remote.filesystem(name)[1] for name in source.files]
    sizes = [fs.size(path) or 0 for path in paths]
    texts: list[str] = []
    read_whole = 0  # text bytes of the files read to their end
    for index, path in enumerate(paths):
        left = budget - read_whole
        found, share, ended = _read_parquet(fs, path, spec.text_field, left) if source.builder == "parquet" else \
            _read_lines_file(fs, path, sizes[index], source.builder, spec.text_field, left)
        texts += found
        found_bytes = sum(len(t.encode()) for t in found)
        if not ended:  # text per file byte of this file's start, for it and every file after it
            per_file_byte = found_bytes / max(share, 1e-12) / max(sizes[index], 1)
            total = read_whole + per_file_byte * sum(sizes[index:])
            return CorpusSample(tuple(texts), read_whole + found_bytes, total, estimated=True)
        read_whole += found_bytes
    if len(texts) < 2:  # as preparation would find
        raise DataError(f"corpus has {len(texts)} non-empty document(s); training and validation need at least 2")
    return CorpusSample(tuple(texts), read_whole, float(read_whole), estimated=False)
