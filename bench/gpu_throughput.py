"""GPU training throughput: our loop inside a one-worker Ray Train run against a plain HF eager loop, for
NTP and MEAP, at the 124M and the 1.1B TinyLlama shapes. One command, on a GPU machine:

    python bench/gpu_throughput.py            # both shapes, about 5-8 minutes with start-up
    python bench/gpu_throughput.py --shapes 124m --steps 20

Prints per (shape, objective): tokens/s, MFU (formula in ``meap_scale.train.metrics``, peak by exact GPU),
peak GPU memory, the warm-up (compilation included) apart from the steady state; then the ratios: our loop
/ plain HF (same shape, same process, same GPU) and MEAP / NTP step time. ``--json FILE`` writes the rows.

The shapes use vocab 32000: a BPE trained on the bundled corpus plus never-used filler tokens up to 32000
(the cost of a vocabulary is its size, not which tokens occur). ``--smoke`` runs the whole script at tiny
shapes on the CPU: it checks the benchmark works, and measures nothing worth reporting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch

from meap_scale.config import DataSpec, ModelSpec, ObjectiveSpec, OptimSpec, RunSpec
from meap_scale.data import prepare_data
from meap_scale.models import build_model, flops_per_token
from meap_scale.train.devices import peak_flops
from meap_scale.train.metrics import MFU_FORMULA, mfu


@dataclass(frozen=True)
class Shape:
    name: str
    model: ModelSpec
    seq_len: int
    micro_batch: int


SHAPES = {
    "124m": Shape("124m", ModelSpec(size="custom", n_layers=12, d_model=768, n_heads=12, n_kv_heads=12, ffn_dim=2048),
                  2048, 16),
    "1.1b": Shape("1.1b", ModelSpec(size="custom", n_layers=22, d_model=2048, n_heads=32, n_kv_heads=4, ffn_dim=5632),
                  2048, 8),
}
SMOKE = Shape("smoke", ModelSpec(size="debug"), 64, 4)
VOCAB = 32000


def padded_tokenizer(folder: str, vocab: int) -> str:
    """The bundled corpus's BPE (4096 entries) with filler tokens up to ``vocab``, saved in ``folder``."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(prepare_data(DataSpec(vocab_size=4096)).tokenizer_path)
    tokenizer.add_tokens([f"<unused_{k}>" for k in range(vocab - len(tokenizer))])
    tokenizer.save_pretrained(folder)
    return folder


def spec_for(shape: Shape, objective: str, steps: int, report_every: int, tokenizer: str, gpu: bool) -> RunSpec:
    return RunSpec(model=shape.model, objective=ObjectiveSpec(name=objective),
                   data=DataSpec(tokenizer=tokenizer, seq_len=shape.seq_len),
                   optim=OptimSpec(batch_tokens=shape.micro_batch * shape.seq_len, micro_batch_size=shape.micro_batch),
                   tokens=steps * shape.micro_batch * shape.seq_len, use_gpu=gpu, log_every=report_every,
                   eval_every=steps, eval_blocks=1, name=f"bench-{shape.name}-{objective}-{os.getpid()}",
                   storage_path=tempfile.mkdtemp(prefix="meap-bench-"))


def our_loop(spec: RunSpec, prepared) -> dict:
    """One-worker Ray Train run: the first report holds compilation and warm-up, the rest steady state."""
    from meap_scale.train.trainer import run_training

    started = time.perf_counter()
    result = run_training(spec, prepared)
    curve = result.curve
    steady = curve[1:] or curve
    return {"tokens_per_s": statistics.median(m["tokens_per_s"] for m in steady),
            "mfu": statistics.median(m["mfu"] for m in steady) if all("mfu" in m for m in steady) else None,
            "peak_memory_gib": max(m.get("gpu_memory_bytes", 0) for m in curve) / 2 ** 30,
            "warmup_s": spec.log_every * spec.optim.batch_tokens / curve[0]["tokens_per_s"],
            "wall_s": time.perf_counter() - started}


def plain_hf_loop(spec: RunSpec, prepared, device: torch.device, warmup: int) -> dict:
    """design.md section 8's reference: HF LlamaForCausalLM, eager, sdpa, bf16 autocast where the device has it,
    fused AdamW, cross-entropy on the full fp32 logits; MEAP masks the inputs the same way."""
    import torch.nn.functional as F

    from meap_scale.objectives import IGNORE_INDEX, StreamPlace, apply_objective

    model = build_model(spec.model.shape, prepared.model_vocab_size, spec.data.seq_len, seed=0).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.optim.lr, fused=device.type == "cuda")
    blocks = prepared.open_split("train")
    size = spec.optim.micro_batch_size
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(spec.steps):
        rows = [(step * size + k) % prepared.train_blocks for k in range(size)]
        tokens = torch.from_numpy(blocks[rows]["tokens"]).to(device)
        batch = apply_objective(tokens, spec.objective, mask_token_id=prepared.mask_id,
                                place=StreamPlace(0, step, tuple(rows)), special_token_ids=prepared.special_ids,
                                pad_token_id=prepared.pad_id)
        started = time.perf_counter()
        with autocast:
            logits = model(input_ids=batch.input_ids).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    tokens_per_s = spec.optim.batch_tokens / statistics.median(times[warmup:])
    return {"tokens_per_s": tokens_per_s, "peak_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                                                              if device.type == "cuda" else 0.0),
            "warmup_s": sum(times[:warmup])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="124m,1.1b", help="comma-separated: 124m, 1.1b")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per measurement (default 30)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script, measures nothing")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    gpu = not args.smoke
    if gpu and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; this benchmark measures GPUs (nothing measured). --smoke checks "
              "the script on the CPU.", file=sys.stderr)
        return 2
    shapes = [SMOKE] if args.smoke else [SHAPES[name] for name in args.shapes.split(",")]
    device = torch.device("cuda" if gpu else "cpu")
    device_name = torch.cuda.get_device_name(device) if gpu else "cpu"
    peak = peak_flops(device_name)
    report_every = max(1, args.steps // 3)
    with tempfile.TemporaryDirectory(prefix="meap-bench-tok-") as folder:
        tokenizer = padded_tokenizer(folder, 4160 if args.smoke else VOCAB)
        rows = []
        for shape in shapes:
            prepared = prepare_data(spec_for(shape, "ntp", args.steps, report_every, tokenizer, gpu).data)
            for objective in ("ntp", "meap"):
                spec = spec_for(shape, objective, args.steps, report_every, tokenizer, gpu)
                flops = flops_per_token(spec.model.shape, prepared.model_vocab_size, shape.seq_len).palm
                ours = our_loop(spec, prepared)
                plain = plain_hf_loop(spec, prepared, device, warmup=report_every)
                plain["mfu"] = mfu(plain["tokens_per_s"], flops, peak, 1)
                rows.append({"shape": shape.name, "objective": objective, "device": device_name,
                             "vocab": prepared.model_vocab_size, "ours": ours, "plain_hf": plain,
                             "ours_over_plain": ours["tokens_per_s"] / plain["tokens_per_s"]})
    print(f"device: {device_name}; MFU = {MFU_FORMULA}, peak {peak or 'unknown'}")
    for row in rows:
        ours, plain = row["ours"], row["plain_hf"]
        print(f"{row['shape']:<6} {row['objective']:<5} ours {ours['tokens_per_s']:>11,.0f} tok/s "
              f"MFU {_pct(ours['mfu'])} peak {ours['peak_memory_gib']:.1f} GiB warm-up {ours['warmup_s']:.0f} s | "
              f"plain HF {plain['tokens_per_s']:>11,.0f} tok/s MFU {_pct(plain['mfu'])} peak "
              f"{plain['peak_memory_gib']:.1f} GiB | ours/plain {row['ours_over_plain']:.2f}")
    for shape in shapes:
        by = {r["objective"]: r["ours"]["tokens_per_s"] for r in rows if r["shape"] == shape.name}
        print(f"{shape.name}: MEAP/NTP step time (ours) {by['ntp'] / by['meap']:.3f}")
    if args.smoke:
        print("smoke run on the CPU: the script works; these numbers are not measurements of anything")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


def _pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a"


if __name__ == "__main__":
    sys.exit(main())
