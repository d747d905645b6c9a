"""A packed split read as one token stream, lazily: the retrieval tasks' haystack source.

The split's Arrow file stays memory-mapped; only the slices a task takes become Python lists. (Reading a
held-out split of 200M tokens into a list would take about 7 GB of host memory on every eval.)
"""

from __future__ import annotations

import bisect

import numpy as np
import pyarrow as pa


class TokenStream:
    """Token ids ``[0, length)`` of a split's blocks, concatenated; supports ``len`` and ``stream[a:b]``
    (a list of ints) like the list it stands for."""

    def __init__(self, column: pa.ChunkedArray, length: int) -> None:
        self._chunks = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
        self._starts = list(np.cumsum([0] + [len(c) for c in self._chunks])[:-1])
        self._length = min(length, sum(len(c) for c in self._chunks))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: slice) -> list[int]:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a TokenStream is read in contiguous slices, stream[a:b]")
        start, stop, _ = index.indices(self._length)
        out: list[int] = []
        position = start
        while position < stop:
            chunk = bisect.bisect_right(self._starts, position) - 1
            offset = position - self._starts[chunk]
            piece = self._chunks[chunk][offset:offset + stop - position]
            out += piece.tolist()
            position += len(piece)
        return out
