"""Training throughput of ``train_loop_per_worker`` against a bare Hugging Face loop, and MEAP's cost.

Prints, from one process on one machine (so the ratios are comparable even on a noisy host):
- tokens/s of our loop and of a bare loop (``model(input_ids, labels=...)``, AdamW, clip) on the same
  model, batch shape and blocks; their ratio (target >= 1.0);
- the MEAP/NTP step-time ratio of our loop (target <= 1.02: masking is a scatter, the FLOPs are equal).

Each configuration runs ``--rounds`` times, interleaved, and the median of the steady-state half of
each run is reported. Usage: ``python bench/train_throughput.py [--model xs] [--steps 24] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import torch

from meap_scale.config import DataSpec, ModelSpec, ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.data import prepare_data
from meap_scale.models import build_model
from meap_scale.train.loop import train_loop_per_worker


def our_loop(spec: RunSpec, prepared) -> float:
    """Tokens/s of the second half of the run (the loop reports twice; the first half warms up)."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = train_loop_per_worker({"run": spec.to_dict(), "data": prepared.to_dict()})
    return out["curve"][-1]["tokens_per_s"]


def bare_hf_loop(spec: RunSpec, prepared) -> float:
    """The textbook loop on the same model shape and blocks: HF computes the shifted loss itself."""
    model = build_model(spec.model.shape, prepared.model_vocab_size, spec.data.seq_len, seed=spec.seed)
    optim = spec.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas,
                                  weight_decay=optim.weight_decay)
    blocks = prepared.open_split("train")
    size, half = optim.micro_batch_size, spec.steps // 2
    batches = [torch.from_numpy(blocks[list(range(i * size, (i + 1) * size))]["tokens"]) for i in range(spec.steps)]
    started = 0.0
    for step, tokens in enumerate(batches):
        if step == half:
            started = time.perf_counter()
        # Same sequence length L as our loop: inputs are the block's first L tokens.
        loss = model(input_ids=tokens[:, :-1], labels=tokens[:, 1:].clone()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (spec.steps - half) * optim.batch_tokens / (time.perf_counter() - started)


def specs(model: str, steps: int, micro_batch: int, seq_len: int) -> dict[str, RunSpec]:
    optim = OptimSpec(batch_tokens=micro_batch * seq_len, micro_batch_size=micro_batch)
    common = dict(model=ModelSpec(size=model), data=DataSpec(seq_len=seq_len), optim=optim,
                  tokens=steps * optim.batch_tokens, log_every=steps // 2, eval_blocks=1)
    return {"ntp": RunSpec(objective=ObjectiveSpec(name="ntp"), **common),
            "meap": RunSpec(objective=ObjectiveSpec(name="meap"), **common)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="xs")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    runs = specs(args.model, args.steps, args.micro_batch, args.seq_len)
    prepared = prepare_data(runs["ntp"].data)
    samples: dict[str, list[float]] = {"ours_ntp": [], "ours_meap": [], "bare_hf": []}
    for _ in range(args.rounds):
        samples["bare_hf"].append(bare_hf_loop(runs["ntp"], prepared))
        samples["ours_ntp"].append(our_loop(runs["ntp"], prepared))
        samples["ours_meap"].append(our_loop(runs["meap"], prepared))
    median = {name: statistics.median(values) for name, values in samples.items()}
    report = {
        "model": args.model, "batch": f"{args.micro_batch}x{args.seq_len}", "torch_threads": torch.get_num_threads(),
        "tokens_per_s": {k: round(v) for k, v in median.items()},
        "ours_over_bare_hf": round(median["ours_ntp"] / median["bare_hf"], 3),
        "meap_over_ntp_step_time": round(median["ours_ntp"] / median["ours_meap"], 3),
        "targets": {"ours_over_bare_hf": ">= 1.0", "meap_over_ntp_step_time": "<= 1.02"},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
