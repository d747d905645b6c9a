"""Work over many seeds in worker processes, with results in seed order whatever the number of processes: a
bootstrap's refits and a calibration's simulated studies are repeatable only if draw k always comes from seed k."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor


def in_seed_order(function, fixed: tuple, seeds: list, n_jobs: int | None) -> list:
    """``function((*fixed, seeds_chunk))`` over round-robin chunks of ``seeds`` in worker processes (inline when
    one job), with the results put back so entry k always comes from seed k, whatever the number of jobs."""
    jobs = max(1, min(n_jobs or os.cpu_count() or 1, len(seeds)))
    chunks = [(*fixed, seeds[k::jobs]) for k in range(jobs)]
    if jobs == 1:
        return list(function(chunks[0]))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        parts = list(pool.map(function, chunks))
    out = [None] * len(seeds)
    for k, part in enumerate(parts):
        out[k::jobs] = list(part)
    return out
