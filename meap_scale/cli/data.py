"""``meap-scale data prepare``: tokenise and pack a corpus into the shard cache once, ahead of runs."""

from __future__ import annotations

import argparse

from meap_scale.cli.spec_options import add_section
from meap_scale.config import DataSpec
from meap_scale.options import at_least


def add_command(commands) -> None:
    data = commands.add_parser("data", help="prepare a corpus (tokenise and pack into shards) once, ahead of runs",
                               description="Tokenise and pack a corpus into the shard cache that train and studies "
                                           "read, here or on a Ray Data actor pool; the shards are the same either "
                                           "way. train and studies prepare it themselves (in one process) when the "
                                           "cache lacks it.")
    actions = data.add_subparsers(dest="action", required=True)
    prepare = actions.add_parser("prepare", help="build the shards of one corpus and data settings",
                                 description="Build (or find cached) the shards of one corpus and data settings.")
    add_section(prepare, "data", DataSpec, (), {"source": "data"})
    prepare.add_argument("--workers", type=at_least(1),
                         help="tokenise on this many Ray Data actors (joins or starts Ray as train does); default: "
                              "this process, with the tokenizer's own threads")
    prepare.add_argument("--new-cluster", action="store_true", help="with --workers: a private local Ray instance")


def run(args: argparse.Namespace) -> int:
    import time

    from meap_scale.data import prepare_data
    from meap_scale.data.prepare import is_prepared

    spec = DataSpec.from_dict({k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("data.")})
    cached = is_prepared(spec)
    if args.workers and not cached:
        from meap_scale.train.cluster import ensure_ray
        from meap_scale.train.shared_storage import join_checked

        join_checked(args.new_cluster, {"corpus cache": spec.resolved_cache_dir})  # its actors write there
        ensure_ray(new_cluster=args.new_cluster)
    started = time.perf_counter()
    prepared = prepare_data(spec, workers=args.workers)
    seconds = time.perf_counter() - started
    tokens = prepared.train_tokens + prepared.val_tokens
    print(f"{prepared.directory}\n  train: {prepared.train_documents:,} documents, {prepared.train_tokens:,} tokens, "
          f"{prepared.train_blocks:,} blocks of {prepared.block_len} in {prepared.train_shards} shard(s)\n"
          f"  val:   {prepared.val_documents:,} documents, {prepared.val_tokens:,} tokens, {prepared.val_blocks:,} "
          f"blocks in {prepared.val_shards} shard(s)\n  "
          + ("found in the cache" if cached else f"prepared in {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s)"))
    return 0
