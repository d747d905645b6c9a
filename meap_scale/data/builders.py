"""Who builds a corpus's shards: this process, or a pool of Ray Data actors. Both call
``meap_scale.data.shards.build_shard`` on the same tasks, so they write the same shards.

The Ray Data path tokenises with one actor per CPU it is given (``TOKENIZERS_PARALLELISM=false`` inside
them: the pool is the parallelism); the single-process path lets the fast tokenizer use its own threads.
"""

from __future__ import annotations

import os

from meap_scale.data.shards import ShardStats, ShardTask, build_shard


def build_here(tasks: list[ShardTask], docs, tokenizer_dir: str, directory: str, block_len: int,
               ids: dict[str, int], vocab_size: int) -> list[ShardStats]:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    return [build_shard(task, docs, tokenizer, directory, block_len, ids, vocab_size) for task in tasks]


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
    """``workers`` actors, each on an equal share of the cluster's CPUs (at most one each)."""
    import ray

    cpus = min(1.0, ray.cluster_resources().get("CPU", 1.0) / workers)
    rows = ray.data.from_items([{"split": t.split, "index": t.index, "documents": t.documents} for t in tasks])
    built = rows.map_batches(_ShardBuilder, batch_size=1, concurrency=workers, num_cpus=cpus,
                             fn_constructor_kwargs=dict(docs=docs, tokenizer_dir=tokenizer_dir, directory=directory,
                                                        block_len=block_len, ids=ids, vocab_size=vocab_size))
    return [ShardStats(row["split"], int(row["index"]), int(row["documents"]), int(row["tokens"]), int(row["blocks"]),
                       row["token_counts"]) for row in built.take_all()]
