"""Who builds a corpus's shards: this process, or a Ray Data pipeline. Both pack each shard with
``meap_scale.data.shards.pack_shard`` and write it here, so they write the same shards.

The Ray Data pipeline has two stages: one task at a time on this node reads a shard's documents from the
memory-mapped corpus (the documents live only here), and an actor pool anywhere in the cluster tokenises
and packs them (one actor per CPU it is given, ``TOKENIZERS_PARALLELISM=false`` inside: the pool is the
parallelism) and hands the blocks back, which this process writes into the build folder. Ray Data's
streaming backpressure bounds the shards in flight. The single-process path lets the fast tokenizer use
its own threads. Both print a progress line per shard to stderr: shards, documents and tokens done,
tokens/s.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from meap_scale.data.shards import ShardStats, ShardTask, pack_shard, shard_name, shard_stats, write_shard


class _BuildProgress:
    def __init__(self, tasks: list[ShardTask]) -> None:
        self.total, self.started = len(tasks), time.perf_counter()
        self.shards = self.documents = self.tokens = 0

    def done(self, stats: ShardStats) -> ShardStats:
        self.shards, self.documents, self.tokens = \
            self.shards + 1, self.documents + stats.documents, self.tokens + stats.tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        print(f"prepare: {self.shards}/{self.total} shards, {self.documents:,} documents, {self.tokens:,} tokens, "
              f"{rate:,.0f} tokens/s", file=sys.stderr, flush=True)
        return stats


def build_here(tasks: list[ShardTask], docs, tokenizer_dir: str, directory: str, block_len: int,
               ids: dict[str, int], vocab_size: int) -> list[ShardStats]:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    progress, built = _BuildProgress(tasks), []
    for task in tasks:
        blocks, stream = pack_shard(docs.select(task.documents)["text"], tokenizer, block_len, ids)
        write_shard(os.path.join(directory, task.name), blocks)
        built.append(progress.done(shard_stats(task.split, task.index, len(task.documents), blocks, stream,
                                               vocab_size)))
    return built


def _read_texts(batch: dict, docs):
    """One row per shard: its documents as an Arrow list of strings, taken from the memory-mapped corpus
    without Python strings (an Arrow table, not numpy: Ray Data would turn lists of strings into
    fixed-width unicode arrays as wide as the longest document)."""
    import pyarrow as pa

    texts = [docs.select(documents).with_format("arrow")[:]["text"].combine_chunks().cast(pa.large_string())
             for documents in batch["documents"]]
    offsets = pa.array(np.cumsum([0, *(len(t) for t in texts)]), type=pa.int64())
    return pa.table({"split": pa.array(list(batch["split"])), "index": pa.array(batch["index"].astype("int64")),
                     "texts": pa.LargeListArray.from_arrays(offsets, pa.concat_arrays(texts))})


class _ShardBuilder:
    """A Ray Data actor: loads the tokenizer once (from its files' bytes: the actor may run on a node
    without the cache), then packs the shards it is given."""

    def __init__(self, tokenizer_files: dict[str, bytes], block_len: int, ids: dict[str, int],
                 vocab_size: int) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from transformers import PreTrainedTokenizerFast

        with tempfile.TemporaryDirectory(prefix="meap-tokenizer-") as folder:
            for name, content in tokenizer_files.items():
                Path(folder, name).write_bytes(content)
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        self.block_len, self.ids, self.vocab_size = block_len, ids, vocab_size

    def __call__(self, batch) -> dict:
        out = {key: [] for key in ("split", "index", "documents", "tokens", "blocks", "token_counts", "packed")}
        for split, index, texts in zip(*(batch.column(name).to_pylist() for name in ("split", "index", "texts"))):
            blocks, stream = pack_shard(texts, self.tokenizer, self.block_len, self.ids)
            stats = shard_stats(split, int(index), len(texts), blocks, stream, self.vocab_size)
            for key in ("split", "index", "documents", "tokens", "blocks", "token_counts"):
                out[key].append(getattr(stats, key))
            out["packed"].append(blocks)
        return out


def build_with_ray_data(tasks: list[ShardTask], docs, tokenizer_dir: str, directory: str, block_len: int,
                        ids: dict[str, int], vocab_size: int, workers: int) -> list[ShardStats]:
    """``workers`` actors, each on one CPU (or an equal share of the cluster's, where it has fewer)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    files = {p.name: p.read_bytes() for p in Path(tokenizer_dir).iterdir() if p.is_file()}
    rows = ray.data.from_items([{"split": t.split, "index": t.index, "documents": t.documents} for t in tasks])
    texts = rows.map_batches(_read_texts, batch_size=1, fn_kwargs={"docs": docs}, num_cpus=0, concurrency=1,
                             label_selector={"ray.io/node-id": here})
    built = texts.map_batches(_ShardBuilder, batch_size=1, batch_format="pyarrow", concurrency=workers,
                              num_cpus=min(1.0, ray.cluster_resources().get("CPU", 1.0) / workers),
                              fn_constructor_kwargs=dict(tokenizer_files=files, block_len=block_len, ids=ids,
                                                         vocab_size=vocab_size))
    progress, stats = _BuildProgress(tasks), []
    for row in built.iter_rows():
        write_shard(os.path.join(directory, shard_name(row["split"], int(row["index"]))), row["packed"])
        stats.append(progress.done(ShardStats(row["split"], int(row["index"]), int(row["documents"]),
                                              int(row["tokens"]), int(row["blocks"]), row["token_counts"])))
    return stats
