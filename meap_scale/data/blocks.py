"""A split's packed blocks as the training loop and the evals read them: its Arrow shards memory-mapped with
pyarrow alone. Every Ray Train worker and trial process opens the splits, and importing ``datasets`` (with pandas)
costs each of them over a second of CPU; the shards are the Arrow IPC streams ``datasets`` wrote, read as they are.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from meap_scale.data.packing import BLOCK_COLUMN


class Blocks:
    """Rows are (L + 1,) int32 blocks numbered globally across the split's shards; indexing with an int, a slice,
    a list or an array of row numbers gives ``{"tokens": (rows, L + 1) array}`` (an int: one (L + 1,) row) of int64,
    the ids torch indexes and scores with, as ``datasets``' numpy format gave them; only those rows are read."""

    def __init__(self, paths: list[str]):
        tables = [pa.ipc.open_stream(pa.memory_map(path)).read_all() for path in paths]
        self.table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, rows) -> dict[str, np.ndarray]:
        if isinstance(rows, (int, np.integer)):
            return {BLOCK_COLUMN: self[[rows]][BLOCK_COLUMN][0]}
        if isinstance(rows, slice):
            rows = range(*rows.indices(len(self)))
        picked = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        column = self.table.column(BLOCK_COLUMN).take(pa.array(picked)).combine_chunks()
        tokens = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        return {BLOCK_COLUMN: tokens.reshape(len(picked), -1) if len(picked) else tokens.reshape(0, 0)}
