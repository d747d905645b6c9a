"""Corpus preparation speed: the single-process path against a Ray Data actor pool, same corpus, same run.

    python bench/data_prepare.py                 # a generated ~200 MB JSONL corpus, pool = all CPUs
    python bench/data_prepare.py --mb 50 --workers 2
    python bench/data_prepare.py --mb 2048 --shard-mb 64 --memory-only --tokenizer DIR   # memory at 2 GB

The corpus is the bundled one's chapters repeated with a line number per copy (so no two documents are
equal), written once to a temporary folder. Every path uses one BPE (trained first, not timed) and writes
the same shards (tests/test_shards.py); each runs in a fresh subprocess so its peak RSS (VmHWM) is its own
(for the Ray Data path that is the driver's: the actors' memory is not in it). RSS counts the pages of
memory-mapped Arrow files the process has touched, which the kernel can drop at will; the peak of its
anonymous part (RssAnon, sampled every 50 ms) is what the process really holds. Three paths: one process
with the fast tokenizer's own threads (the default), one process on one thread (the one-core reference
the Ray Data pool is measured against: on N CPUs its limit is N x), and the Ray Data actor pool.
Prints tokens/s of each, end to end (reading the documents, planning, building) and of the build alone
(tokenising, packing and writing shards, from the last progress line; the part the pool parallelises),
the ratios, peak RSS, and the hours 10B tokens would take at the pool's measured
per-CPU rate on 1 and on 8 nodes of N CPUs (``--node-cpus``, default 32), assuming the pool scales
linearly with CPUs up to the measured ceilings of the preparing node's reader and shard writer, plus the
serial reading and planning at the rate measured here: a projection, printed as one.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time

RUN = """
import json, os, sys, threading, time
spec_args, workers, shard_bytes = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

peak_anon = [0]
def sample():
    while True:
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
from meap_scale.config import DataSpec
from meap_scale.data import prepare_data
if workers:
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
started = time.perf_counter()
prepared = prepare_data(DataSpec(**spec_args), workers=workers or None, shard_bytes=shard_bytes)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "tokens": prepared.train_tokens + prepared.val_tokens,
                  "peak_rss": status("VmHWM"), "peak_anon": peak_anon[0],
                  "shards": prepared.train_shards + prepared.val_shards}))
"""


def generate_corpus(path: str, megabytes: int) -> int:
    """JSONL of the bundled chapters, repeated with a copy number until ``megabytes``; returns its bytes."""
    from meap_scale.data.sources import bundled_path

    with lzma.open(bundled_path("kjv"), "rt") as handle:
        chapters = [json.loads(line)["text"] for line in handle]
    written, copy = 0, 0
    with open(path, "w") as out:
        while written < megabytes * 2 ** 20:
            for text in chapters:
                line = json.dumps({"text": f"Copy {copy}. {text}"}) + "\n"
                out.write(line)
                written += len(line)
            copy += 1
    return written


def timed(spec_args: dict, workers: int, shard_bytes: int, *, one_thread: bool = False) -> dict:
    env = {**os.environ, **({"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"} if one_thread else {})}
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec_args), str(workers), str(shard_bytes)],
                         capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    last = [line for line in out.stderr.splitlines() if line.startswith("prepare: ")][-1]
    result["build_rate"] = float(last.rsplit(", ", 1)[1].split()[0].replace(",", ""))
    return result


def serial_ceilings(corpus: str, hf_cache: str, shard_bytes: int, block_len: int) -> tuple[float, float]:
    """Text bytes/s of the Ray Data path's reader stage and tokens/s of its shard writer: the two stages that
    run once, on the preparing node, however many actors tokenise. Measured on this corpus's training
    shards and on random blocks of the same length."""
    import datasets
    import numpy as np

    from meap_scale.data import sources
    from meap_scale.data.builders import _read_texts
    from meap_scale.data.prepare import split_documents
    from meap_scale.data.shards import plan_shards, write_shard

    datasets.disable_progress_bars()
    docs = sources.load_documents(sources.resolve_source(corpus), "text", hf_cache)
    tasks = plan_shards(docs, split_documents(len(docs), 0.02, 0)[0], "train", shard_bytes)
    started, text_bytes = time.perf_counter(), 0
    for task in tasks:
        table = _read_texts({"split": np.array([task.split]), "index": np.array([task.index]),
                             "documents": [task.documents]}, docs)
        text_bytes += table.column("texts").combine_chunks().values.nbytes
    read = text_bytes / (time.perf_counter() - started)
    blocks = np.random.default_rng(0).integers(0, 4096, size=(shard_bytes // 4 // block_len, block_len), dtype=np.int32)
    started = time.perf_counter()
    for k in range(8):
        write_shard(os.path.join(os.path.dirname(hf_cache), f"written-{k}.arrow"), blocks)
    return read, 8 * blocks.size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB of JSONL (default 200)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray Data actors (default: CPUs)")
    parser.add_argument("--node-cpus", type=int, default=32, help="CPUs per node for the 10B-token projection")
    parser.add_argument("--shard-mb", type=int, default=16, help="text per shard in MB (default 16)")
    parser.add_argument("--tokenizer", help="a tokenizer folder or hub name, instead of a BPE trained on the corpus "
                                            "first (for corpora of several GB, where BPE training would dominate)")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the default one-process path: its rate and peak memory, for large --mb")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meap-data-bench-") as folder:
        corpus = os.path.join(folder, "corpus.jsonl")
        size = generate_corpus(corpus, args.mb)
        base = {"source": corpus, "seq_len": 2048,
                **({"tokenizer": args.tokenizer} if args.tokenizer else {"vocab_size": 4096})}
        shard_bytes = args.shard_mb * 2 ** 20
        if not args.tokenizer:
            timed({**base, "cache_dir": os.path.join(folder, "warm")}, 0, shard_bytes)  # trains the BPE once
        results = {}
        paths = (("single process", 0, False), ("one thread", 0, True), (f"Ray Data x {args.workers}", args.workers,
                                                                           False))
        for name, workers, one_thread in paths[:1] if args.memory_only else paths:
            cache = os.path.join(folder, f"cache-{len(results)}")
            if not args.tokenizer:
                shutil.copytree(os.path.join(folder, "warm", "tokenizers"), os.path.join(cache, "tokenizers"))
            results[name] = timed({**base, "cache_dir": cache}, workers, shard_bytes, one_thread=one_thread)
        if not args.memory_only:
            read_bytes, write_tokens = serial_ceilings(corpus, os.path.join(folder, "serial", "hf"), shard_bytes,
                                                       base["seq_len"] + 1)
    print(f"corpus: {size / 2 ** 20:.0f} MB of JSONL, {results['single process']['tokens']:,} tokens, "
          f"{results['single process']['shards']} shards; {os.cpu_count()} CPUs here")
    rates, builds = {}, {}
    for name, result in results.items():
        rates[name], builds[name] = result["tokens"] / result["seconds"], result["build_rate"]
        whose = "driver only, not its actors" if name.startswith("Ray") else "the process"
        print(f"  {name:<18} {rates[name]:>12,.0f} tokens/s end to end ({result['seconds']:6.1f} s), build alone "
              f"{builds[name]:>12,.0f} tokens/s; peak RSS {result['peak_rss'] / 2 ** 30:.2f} GiB, of it anonymous "
              f"{result['peak_anon'] / 2 ** 30:.2f} GiB ({whose})")
    if args.memory_only:
        return 0
    pool = f"Ray Data x {args.workers}"
    for over in ("one thread", "single process"):
        print(f"  Ray Data / {over}: {rates[pool] / rates[over]:.2f}x end to end, {builds[pool] / builds[over]:.2f}x "
              f"build alone" + (f" (limit {args.workers}x)" if over == "one thread" else ""))
    pooled = results[pool]
    serial_per_token = max(0.0, pooled["seconds"] - pooled["tokens"] / pooled["build_rate"]) / pooled["tokens"]
    per_cpu = builds[pool] / args.workers
    read_tokens = read_bytes * pooled["tokens"] / size
    print(f"  preparing node's serial stages: reader {read_bytes / 2 ** 20:,.0f} MiB/s of text "
          f"({read_tokens:,.0f} tokens/s), shard writer {write_tokens:,.0f} tokens/s")
    for nodes in (1, 8):
        build = min(per_cpu * args.node_cpus * nodes, read_tokens, write_tokens)
        hours = 10e9 * (serial_per_token + 1 / build) / 3600
        print(f"  projection: 10B tokens on {nodes} node(s) of {args.node_cpus} CPUs: {hours:.2f} h (build at "
              f"{build:,.0f} tokens/s: {per_cpu:,.0f} per CPU assumed linear, capped by the reader and the writer; "
              f"plus the serial reading and planning measured here, {serial_per_token * 1e9:,.0f} s per 1B tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
