"""Corpus preparation speed: the single-process path against a Ray Data actor pool, same corpus, same run.

    python bench/data_prepare.py                 # a generated ~200 MB JSONL corpus, pool = all CPUs
    python bench/data_prepare.py --mb 50 --workers 2

The corpus is the bundled one's chapters repeated with a line number per copy (so no two documents are
equal), written once to a temporary folder. Both paths use one BPE (trained first, not timed) and write
the same shards (tests/test_shards.py); each runs in a fresh subprocess so its peak RSS (VmHWM) is its own
(for the Ray Data path that is the driver's: the actors' memory is not in it).
Prints tokens/s of each, their ratio, peak RSS, and the hours 10B tokens would take at the measured
per-CPU rate on 1 and on 8 nodes of N CPUs (``--node-cpus``, default 32), assuming the pool scales
linearly with CPUs: a projection, printed as one.
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
import json, os, sys, time
spec_args, workers, shard_bytes = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
from meap_scale.config import DataSpec
from meap_scale.data import prepare_data
if workers:
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
started = time.perf_counter()
prepared = prepare_data(DataSpec(**spec_args), workers=workers or None, shard_bytes=shard_bytes)
seconds = time.perf_counter() - started
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "tokens": prepared.train_tokens + prepared.val_tokens, "peak_rss": peak,
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


def timed(spec_args: dict, workers: int, shard_bytes: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(spec_args), str(workers), str(shard_bytes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB of JSONL (default 200)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray Data actors (default: CPUs)")
    parser.add_argument("--node-cpus", type=int, default=32, help="CPUs per node for the 10B-token projection")
    parser.add_argument("--shard-mb", type=int, default=16, help="text per shard in MB (default 16)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="meap-data-bench-") as folder:
        corpus = os.path.join(folder, "corpus.jsonl")
        size = generate_corpus(corpus, args.mb)
        base = {"source": corpus, "seq_len": 2048, "vocab_size": 4096}
        shard_bytes = args.shard_mb * 2 ** 20
        timed({**base, "cache_dir": os.path.join(folder, "warm")}, 0, shard_bytes)  # trains the BPE once
        results = {}
        for name, workers in (("single process", 0), (f"Ray Data x {args.workers}", args.workers)):
            cache = os.path.join(folder, f"cache-{workers}")
            shutil.copytree(os.path.join(folder, "warm", "tokenizers"), os.path.join(cache, "tokenizers"))
            started = time.perf_counter()
            results[name] = timed({**base, "cache_dir": cache}, workers, shard_bytes)
            results[name]["wall"] = time.perf_counter() - started
    print(f"corpus: {size / 2 ** 20:.0f} MB of JSONL, {results['single process']['tokens']:,} tokens, "
          f"{results['single process']['shards']} shards; {os.cpu_count()} CPUs here")
    rates = {}
    for name, result in results.items():
        rates[name] = result["tokens"] / result["seconds"]
        whose = "driver only, not its actors" if name != "single process" else "the process"
        print(f"  {name:<18} {rates[name]:>12,.0f} tokens/s  {result['seconds']:7.1f} s  peak RSS "
              f"{result['peak_rss'] / 2 ** 30:.2f} GiB ({whose})")
    single, pooled = rates.values()
    print(f"  Ray Data / single process: {pooled / single:.2f}x")
    per_cpu = pooled / args.workers
    for nodes in (1, 8):
        hours = 10e9 / (per_cpu * args.node_cpus * nodes) / 3600
        print(f"  projection: 10B tokens on {nodes} node(s) of {args.node_cpus} CPUs: {hours:.2f} h "
              f"(at {per_cpu:,.0f} tokens/s per CPU, assuming linear scaling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
