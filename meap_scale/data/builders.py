"""Who builds a corpus's shards: this process, or a pool of Ray Data actors. Both call
``meap_scale.data.shards.build_shard`` on the same tasks, so they write the same shards.

The Ray Data path tokenises with one actor per CPU it is given (``TOKENIZERS_PARALLELISM=false`` inside
them: the pool is the parallelism); the single-process path lets the fast tokenizer use its own threads.
The actors run on the preparing node: they read its memory-mapped documents and write into its build
folder (a cache at a URL is uploaded from there, ``meap_scale.data.prepare``). Both print a progress line
per shard to stderr: shards, documents and tokens done, tokens/s.
"""

from __future__ import annotations

import os
import sys
import time

from meap_scale.data.shards import ShardStats, ShardTask, build_shard


class _Progress:
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
    progress = _Progress(tasks)
    return [progress.done(build_shard(task, docs, tokenizer, directory, block_len, ids, vocab_size)) for task in tasks]


class _ShardBuilder:
    """A Ray Data actor: loads the tokenizer once, then builds the shards of the rows it is given."""

    def __init__(self, docs, tokenizer_dir: str, directory: str, block_len: int, ids: dict[str, int],
                 vocab_size: int) -> None:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        from transformers import PreTrainedTokenizerFast

        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
        self.docs, self.directory, self.block_len, self.ids, self.vocab_size = \
            docs, directory, block_len, ids, vocab_size

    def __call__(self, batch: dict) -> dict:
        stats = [build_shard(ShardTask(split, int(index), documents), self.docs, self.tokenizer, self.directory,
                             self.block_len, self.ids, self.vocab_size)
                 for split, index, documents in zip(batch["split"], batch["index"], batch["documents"])]
        return {"split": [s.split for s in stats], "index": [s.index for s in stats],
                "documents": [s.documents for s in stats], "tokens": [s.tokens for s in stats],
                "blocks": [s.blocks for s in stats], "token_counts": [s.token_counts for s in stats]}


def build_with_ray_data(tasks: list[ShardTask], docs, tokenizer_dir: str, directory: str, block_len: int,
                        ids: dict[str, int], vocab_size: int, workers: int) -> list[ShardStats]:
    """``workers`` actors on this node, each on an equal share of its CPUs (at most one each)."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    node_cpus = next(n["Resources"].get("CPU", 1.0) for n in ray.nodes() if n["NodeID"] == here)
    rows = ray.data.from_items([{"split": t.split, "index": t.index, "documents": t.documents} for t in tasks])
    built = rows.map_batches(_ShardBuilder, batch_size=1, concurrency=workers, num_cpus=min(1.0, node_cpus / workers),
                             label_selector={"ray.io/node-id": here},
                             fn_constructor_kwargs=dict(docs=docs, tokenizer_dir=tokenizer_dir, directory=directory,
                                                        block_len=block_len, ids=ids, vocab_size=vocab_size))
    progress = _Progress(tasks)
    return [progress.done(ShardStats(row["split"], int(row["index"]), int(row["documents"]), int(row["tokens"]),
                                     int(row["blocks"]), row["token_counts"])) for row in built.iter_rows()]
