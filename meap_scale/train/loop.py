"""``train_loop_per_worker``: one DDP rank of a MEAP or NTP pretraining run, in plain PyTorch.

It runs inside a Ray Train worker (Ray has set up the process group) or standalone, e.g.
``python -c 'from meap_scale.train.loop import train_loop_per_worker; train_loop_per_worker(cfg)'`` or
under ``torchrun``. The objective is the only thing that differs between MEAP and NTP: both read the
same blocks in the same order (see ``meap_scale.data.order``) through the same loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from meap_scale.config import RunSpec
from meap_scale.data.order import BlockOrder
from meap_scale.data.prepare import PreparedData
from meap_scale.models import build_model, flops_per_token
from meap_scale.objectives import IGNORE_INDEX, Batch, StreamPlace, apply_objective
from meap_scale.train.checkpoint import RUN_FILE, TrainState, load_checkpoint, save_checkpoint
from meap_scale.train.metrics import mfu, peak_flops
from meap_scale.train.schedule import lr_multiplier
from meap_scale.train.session import Session, current_session
from meap_scale.train.telemetry import telemetry_for


def train_loop_per_worker(config: dict, session: Session | None = None) -> dict:
    """Train one run; ``config`` holds ``run`` (RunSpec dict), ``data`` (PreparedData dict) and optionally
    ``study`` (the name its live metrics are tagged with).

    The session defaults to the Ray Train worker's, or a standalone one. Returns rank 0's curve
    (every report), the final metrics and the data digest of all ranks.
    """
    return TrainingRun(RunSpec.from_dict(config["run"]), PreparedData.from_dict(config["data"]),
                       session or current_session(config), study=config.get("study")).run()


def _device(spec: RunSpec, session: Session) -> torch.device:
    if spec.use_gpu:
        return torch.device("cuda", session.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _uses_bf16(spec: RunSpec, device: torch.device) -> bool:
    return spec.precision == "bf16" or (spec.precision == "auto" and device.type == "cuda")


def chain_digest(previous: str, blocks: np.ndarray) -> str:
    """Extend a rank's running hash with the blocks it just read (before any masking)."""
    return hashlib.sha256(previous.encode() + blocks.tobytes()).hexdigest()


class TrainingRun:
    """The state of one rank: model, optimiser, data order and the metrics gathered between reports."""

    def __init__(self, spec: RunSpec, data: PreparedData, session: Session, study: str | None = None) -> None:
        self.spec, self.data, self.session = spec, data, session
        self.telemetry = telemetry_for(spec, study, session.rank)
        self.device = _device(spec, session)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.bf16 = _uses_bf16(spec, self.device)
        shape = spec.model.shape
        self.model = build_model(shape, data.model_vocab_size, spec.data.seq_len, seed=spec.seed,
                                 tie_embeddings=spec.model.tie_embeddings, rope_theta=spec.model.rope_theta,
                                 pad_token_id=data.pad_id).to(self.device)
        optim = spec.optim
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps,
                                           weight_decay=optim.weight_decay, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(spec.steps, lr=optim.lr, min_lr=optim.min_lr,
                                          warmup_fraction=optim.warmup_fraction))
        self.flops_per_token = flops_per_token(shape, data.model_vocab_size, spec.data.seq_len,
                                               spec.model.tie_embeddings).palm
        self.order = BlockOrder(data.train_blocks, spec.seed, spec.sequences_per_step,
                                spec.optim.micro_batch_size, session.world_size)
        self.train_blocks, self.val_blocks = data.open_split("train"), data.open_split("val")
        self.state = TrainState()
        self.digest = ""
        self.forward = self.model
        self.ddp: DistributedDataParallel | None = None

    def _wrap(self) -> None:
        if self.session.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = self.forward = DistributedDataParallel(self.model, device_ids=device_ids)
        if self.spec.compile:
            self.forward = torch.compile(self.forward)

    def _resume(self) -> None:
        with self.session.resume() as directory:
            if directory:
                self.state = load_checkpoint(directory, self.model, self.optimizer, self.scheduler)
                self.digest = self.state.data_digests[self.session.rank]

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.forward(input_ids=input_ids).logits  # (B, L, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)

    def _tokens(self, blocks) -> torch.Tensor:
        return torch.from_numpy(blocks).to(self.device, non_blocking=True)

    def batch(self, step: int, micro_step: int) -> tuple[np.ndarray, Batch]:
        """This rank's blocks at (step, micro-step), and the Batch the loss sees; masks are keyed by the
        blocks' stream positions, so the layout of ranks and micro-batches does not change them."""
        rank = self.session.rank
        blocks = self.train_blocks[self.order.micro_batch(step, micro_step, rank)]["tokens"]
        place = StreamPlace(self.spec.seed, step, tuple(self.order.positions(step, micro_step, rank)))
        batch = apply_objective(self._tokens(blocks), self.spec.objective, mask_token_id=self.data.mask_id,
                                place=place, special_token_ids=self.data.special_ids, pad_token_id=self.data.pad_id)
        return blocks, batch

    def _micro_step(self, step: int, micro_step: int, last: bool) -> torch.Tensor:
        blocks, batch = self.batch(step, micro_step)
        self.digest = chain_digest(self.digest, blocks)  # hashed on the host: no device sync
        sync = contextlib.nullcontext() if last or self.ddp is None else self.ddp.no_sync()
        with sync:
            loss = self._loss(batch.input_ids, batch.labels)
            (loss / self.spec.accumulation_steps).backward()
        return loss.detach()

    def _optimizer_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        accumulation = self.spec.accumulation_steps
        loss = sum(self._micro_step(step, m, m == accumulation - 1) for m in range(accumulation)) / accumulation
        clip = self.spec.optim.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        if self.session.world_size > 1:
            dist.all_reduce(values)
            values = values / self.session.world_size
        return values

    @torch.no_grad()
    def evaluate(self) -> float:
        """Clean (unmasked) next-token loss on the same validation blocks every time, split over ranks."""
        self.model.eval()
        total = torch.zeros(2, device=self.device, dtype=torch.float64)  # summed loss, token count
        count = min(self.spec.eval_blocks, self.data.val_blocks)
        ids = list(range(self.session.rank, count, self.session.world_size))
        size = self.spec.optim.micro_batch_size
        for start in range(0, len(ids), size):
            tokens = self._tokens(self.val_blocks[ids[start:start + size]]["tokens"])
            labels = tokens[:, 1:].masked_fill(tokens[:, 1:] == self.data.pad_id, IGNORE_INDEX)
            with self._autocast():
                logits = self.model(input_ids=tokens[:, :-1]).logits
            total[0] += F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                                        reduction="sum")
            total[1] += (labels != IGNORE_INDEX).sum()
        if self.session.world_size > 1:
            dist.all_reduce(total)
        self.model.train()
        return float(total[0] / total[1])

    def _gather_digests(self) -> list[str]:
        if self.session.world_size == 1:
            return [self.digest]
        digests: list[str | None] = [None] * self.session.world_size
        dist.all_gather_object(digests, self.digest)
        return digests

    def _due(self, every: int, step: int) -> bool:
        return step == self.spec.steps or (every > 0 and step % every == 0)

    def _metrics(self, step: int, losses: list[torch.Tensor], grad_norm: torch.Tensor, seconds: float) -> dict:
        train_loss = self._mean_over_ranks(torch.stack(losses).mean().reshape(1).double())
        tokens = len(losses) * self.spec.optim.batch_tokens
        metrics = {
            "step": step,
            "tokens": step * self.spec.optim.batch_tokens,
            "epoch": self.order.epochs_after(step),
            "train_loss": float(train_loss),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "tokens_per_s": tokens / seconds,
        }
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        utilisation = mfu(metrics["tokens_per_s"], self.flops_per_token, peak_flops(device_name),
                          self.session.world_size)
        if utilisation is not None:
            metrics["mfu"] = utilisation
        if self.device.type == "cuda":
            metrics["gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return metrics

    def _report(self, step: int, metrics: dict) -> None:
        if self._due(self.spec.eval_every, step):
            metrics["val_loss"] = self.evaluate()
        checkpoint = self._due(self.spec.checkpoint_interval, step)
        digests = self._gather_digests() if checkpoint or step == self.spec.steps else None
        if self.session.rank == 0:
            self.state.curve.append(metrics)
        self.state.step, self.state.data_digests = step, digests or self.state.data_digests
        if self.telemetry:
            self.telemetry.record(metrics)
        with _checkpoint_folder(self, step if checkpoint else None) as folder:
            self.session.report(metrics, folder)

    def _maybe_fail(self, step: int) -> None:
        """Fault injection: a hard exit, as a crashed or preempted worker would, on a fresh start only."""
        failing_rank = 1 if self.session.world_size > 1 else 0
        if self.spec.fail_at_step == step and self.state.resumed_from_step is None and self.session.rank == failing_rank:
            os._exit(17)

    def _elapsed(self, started: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def run(self) -> dict:
        self._resume()
        self._wrap()
        self.model.train()
        losses: list[torch.Tensor] = []
        started = time.perf_counter()
        for step in range(self.state.step + 1, self.spec.steps + 1):
            loss, grad_norm = self._optimizer_step(step - 1)
            losses.append(loss)
            if self._due(self.spec.log_every, step) or self._due(self.spec.eval_every, step) \
                    or self._due(self.spec.checkpoint_interval, step):
                self._report(step, self._metrics(step, losses, grad_norm, self._elapsed(started)))
                losses, started = [], time.perf_counter()
            self._maybe_fail(step)
        evals, summary = self._evaluate_suite()
        return {"curve": self.state.curve, "final": self.state.curve[-1] if self.state.curve else {},
                "data_digest": hashlib.sha256("".join(self.state.data_digests).encode()).hexdigest(),
                "resumed_from_step": self.state.resumed_from_step, "evals": evals, "eval_summary": summary}

    def _evaluate_suite(self) -> tuple[list[dict], dict]:
        """The run's eval suite on the final model, on rank 0 only (after the last collective)."""
        if not self.spec.evals.tasks or self.session.rank != 0:
            return [], {}
        from meap_scale.evals.suite import run_suite

        with self._autocast():
            return run_suite(self.model, self.data, self.spec.evals, self.spec.data.seq_len, self.device)


@contextlib.contextmanager
def _checkpoint_folder(run: TrainingRun, step: int | None) -> Iterator[str | None]:
    """Rank 0 writes a checkpoint into a temporary folder that lives until the report has copied it."""
    if step is None or run.session.rank != 0 or not run.session.keeps_checkpoints:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"meap-ckpt-{step}-") as folder:
        save_checkpoint(folder, run.model, run.optimizer, run.scheduler, run.state)
        with open(os.path.join(folder, RUN_FILE), "w") as handle:
            handle.write(run.spec.to_json())  # lets `meap-scale eval` rebuild the data and tokenizer
        yield folder
