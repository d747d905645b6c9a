"""``train_loop_per_worker``: one rank (DDP or FSDP) of a MEAP or NTP pretraining run, in plain PyTorch.

It runs inside a Ray Train worker (Ray has set up the process group) or standalone in one process, e.g.
``python -c 'from meap_scale.train.loop import train_loop_per_worker; train_loop_per_worker(cfg)'`` (a process
group the caller initialised is used; nothing here initialises one, so ``torchrun`` alone gives independent
single-process runs). The objective is the only thing that differs between MEAP and NTP: both read the
same blocks in the same order (see ``meap_scale.data.order``) through the same loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from meap_scale.checkpoints import DATA_FILE, RUN_FILE
from meap_scale.config import RunSpec
from meap_scale.data.order import BlockOrder
from meap_scale.data.prepare import PreparedData
from meap_scale.models import build_model, flops_per_token
from meap_scale.objectives import IGNORE_INDEX, Batch, StreamPlace, apply_objective
from meap_scale.schedule import lr_multiplier
from meap_scale.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from meap_scale.train.devices import hardware_label, peak_flops
from meap_scale.train.metrics import mfu
from meap_scale.train.parallel import Placed, gathered_state_dict, place_ddp, place_fsdp, total_norm
from meap_scale.train.session import Session, current_session
from meap_scale.train.telemetry import telemetry_for
from meap_scale.transfer import to_device


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


def resolve_precision(spec: RunSpec, device: torch.device) -> tuple[bool, str | None]:
    """Whether the run autocasts to bf16, and a line for the log where ``auto`` could not give bf16."""
    if spec.precision == "fp32" or device.type != "cuda":
        return spec.precision == "bf16", None
    if torch.cuda.is_bf16_supported():
        return True, None
    if spec.precision == "bf16":
        raise RuntimeError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use "
                           f"--precision fp32 or auto")
    return False, (f"{torch.cuda.get_device_name(device)} has no bf16: precision auto trains in fp32 (the run's "
                   f"identity still records the bf16 that auto means on GPUs)")


def enable_fast_matmul(device: torch.device) -> None:
    """TF32 for the fp32 matmuls autocast leaves (and fp32 runs) on GPUs that have it."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


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
        enable_fast_matmul(self.device)
        self.bf16, precision_note = resolve_precision(spec, self.device)
        if precision_note and session.rank == 0:
            print(f"meap-scale: {precision_note}", flush=True)
        self.placed = self._place()
        optim = spec.optim
        self.optimizer = torch.optim.AdamW(self.placed.net.parameters(), lr=optim.lr, betas=optim.betas,
                                           eps=optim.eps, weight_decay=optim.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(spec.steps, lr=optim.lr, min_lr=optim.min_lr,
                                          warmup_fraction=optim.warmup_fraction, warmup_steps=optim.warmup_steps,
                                          schedule=optim.schedule,
                                          cooldown_fraction=optim.cooldown_fraction,
                                          cooldown_shape=optim.cooldown_shape))
        self.flops_per_token = flops_per_token(spec.model.shape, data.model_vocab_size, spec.data.seq_len,
                                               spec.model.tie_embeddings).palm
        device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.peak_flops = peak_flops(device_name, spec.peak_flops)
        self.hardware = hardware_label(session.world_size, device_name)
        if self.device.type == "cuda" and self.peak_flops is None and session.rank == 0:
            print(f"meap-scale: no peak FLOP/s known for {device_name!r}: MFU not reported (pass --peak-flops)",
                  flush=True)
        self.order = BlockOrder(data.train_blocks, spec.seed, spec.sequences_per_step,
                                spec.optim.micro_batch_size, session.world_size)
        self.train_blocks, self.val_blocks = data.open_split("train"), data.open_split("val")
        self.state = TrainState()
        self.digest = ""
        self.saved_for_preemption = False

    def _build_lm(self):
        spec, data = self.spec, self.data
        zeroed = data.mask_id if spec.objective.mask_with == "zero_embedding" else None
        return build_model(spec.model.shape, data.model_vocab_size, spec.data.seq_len, seed=spec.seed,
                           tie_embeddings=spec.model.tie_embeddings, rope_theta=spec.model.rope_theta,
                           pad_token_id=data.pad_id, zero_embedding_token_id=zeroed)

    def _place(self) -> Placed:
        """FSDP needs a process group; a lone in-process worker has none and nothing to shard over, so it
        trains whole (the checkpoint format is the same)."""
        options = dict(activation_checkpointing=self.spec.activation_checkpointing,
                       compile_layers=self.spec.compile_used)
        if self.spec.parallel == "fsdp" and dist.is_initialized():
            return place_fsdp(self._build_lm, self.device, self.session.rank, self.session.world_size,
                              bf16=self.bf16, **options)
        return place_ddp(self._build_lm(), self.device, self.session.world_size, **options)

    def _resume(self) -> None:
        with self.session.resume() as directory:
            if directory:
                self.state = load_checkpoint(directory, self.placed.net, self.optimizer, self.scheduler)
                self.digest = self._digest_after_resume()

    def _digest_after_resume(self) -> str:
        """This rank's running digest; a run resumed on other workers than it saved with starts a new chain
        from the hash of all the old ones (the data it read is the same: block order is per stream position)."""
        digests = self.state.data_digests
        if len(digests) == self.session.world_size:
            return digests[self.session.rank]
        return hashlib.sha256("".join(digests).encode()).hexdigest()

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _tokens(self, blocks) -> torch.Tensor:
        return to_device(torch.from_numpy(blocks), self.device)

    def batch(self, step: int, micro_step: int) -> tuple[np.ndarray, Batch]:
        """This rank's blocks at (step, micro-step), and the Batch the loss sees; masks are keyed by the
        blocks' stream positions, so the layout of ranks and micro-batches does not change them."""
        rank = self.session.rank
        blocks = self.train_blocks[self.order.micro_batch(step, micro_step, rank)]["tokens"]
        place = StreamPlace(self.spec.seed, step, tuple(self.order.positions(step, micro_step, rank)), self.spec.steps)
        batch = apply_objective(self._tokens(blocks), self.spec.objective, mask_token_id=self.data.mask_id,
                                place=place, special_token_ids=self.data.special_ids, pad_token_id=self.data.pad_id,
                                vocab_size=self.data.vocab_size)
        return blocks, batch

    def _micro_step(self, step: int, micro_step: int, last: bool) -> torch.Tensor:
        blocks, batch = self.batch(step, micro_step)
        self.digest = chain_digest(self.digest, blocks)  # hashed on the host: no device sync
        with self.placed.gradient_sync(last):
            with self._autocast():
                loss = self.placed.forward(batch.input_ids, batch.labels)
            (loss / self.spec.accumulation_steps).backward()
        return loss.detach()

    def _optimizer_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        accumulation = self.spec.accumulation_steps
        loss = sum(self._micro_step(step, m, m == accumulation - 1) for m in range(accumulation)) / accumulation
        clip = self.spec.optim.grad_clip or float("inf")
        grad_norm = total_norm(torch.nn.utils.clip_grad_norm_(self.placed.net.parameters(), clip))
        self.optimizer.step()
        self.rate = self.scheduler.get_last_lr()[0]  # the rate this step used; the scheduler moves on to the next
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
        self.placed.net.eval()
        total = torch.zeros(2, device=self.device, dtype=torch.float64)  # summed loss, token count
        count = min(self.spec.eval_blocks, self.data.val_blocks)
        ids = list(range(self.session.rank, count, self.session.world_size))
        size = self.spec.optim.micro_batch_size
        # Every rank runs as many forward passes as the rank with most blocks (under FSDP each pass gathers
        # parameters collectively); a rank out of blocks repeats block 0 and does not count it.
        passes = math.ceil(math.ceil(count / self.session.world_size) / size)
        for index in range(passes):
            chunk = ids[index * size:(index + 1) * size]
            tokens = self._tokens(self.val_blocks[chunk or [0]]["tokens"])
            labels = tokens[:, 1:].masked_fill(tokens[:, 1:] == self.data.pad_id, IGNORE_INDEX)
            with self._autocast():
                losses = self.placed.net(tokens[:, :-1], labels, per_token=True)
            if chunk:
                total[0] += losses.double().sum()
                total[1] += (labels != IGNORE_INDEX).sum()
        if self.session.world_size > 1:
            dist.all_reduce(total)
        self.placed.net.train()
        return float(total[0] / total[1])

    def _gather_digests(self) -> list[str]:
        if self.session.world_size == 1:
            return [self.digest]
        digests: list[str | None] = [None] * self.session.world_size
        dist.all_gather_object(digests, self.digest)
        return digests

    @property
    def last_step(self) -> int:
        """Where this invocation stops: the run's end, or the pause ``stop_at_step`` asks for."""
        return self.spec.stop_at_step or self.spec.steps

    def _due(self, every: int, step: int) -> bool:
        return step == self.spec.steps or (every > 0 and step % every == 0)

    def _checkpoint_due(self, step: int) -> bool:
        """At the run's end, every ``checkpoint_interval`` steps, and where it pauses (its next start)."""
        return step == self.last_step or self._due(self.spec.checkpoint_interval, step)

    def _metrics(self, step: int, losses: list[torch.Tensor], grad_norm: torch.Tensor, seconds: float) -> dict:
        train_loss = self._mean_over_ranks(torch.stack(losses).mean().reshape(1).double())
        tokens = len(losses) * self.spec.optim.batch_tokens
        metrics = {
            "step": step,
            "tokens": step * self.spec.optim.batch_tokens,
            "epoch": self.order.epochs_after(step),
            "train_loss": float(train_loss),
            "lr": self.rate,
            "grad_norm": float(grad_norm),
            "tokens_per_s": tokens / seconds,
            "hardware": self.hardware,  # with every report: a run stopped or failed mid-way still says it
        }
        utilisation = mfu(metrics["tokens_per_s"], self.flops_per_token, self.peak_flops, self.session.world_size)
        if utilisation is not None:
            metrics["mfu"] = utilisation
        if self.device.type == "cuda":
            metrics["gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return metrics

    def _report(self, step: int, metrics: dict) -> None:
        if self._due(self.spec.eval_every, step):
            metrics["val_loss"] = self.evaluate()
        checkpoint = self._checkpoint_due(step) | self._preemption_noticed(step)
        digests = self._gather_digests() if checkpoint else None
        if self.session.rank == 0:
            self.state.curve.append(metrics)
        self.state.step, self.state.data_digests = step, digests or self.state.data_digests
        if self.telemetry:
            self.telemetry.record(metrics)
        with _checkpoint_folder(self, step if checkpoint else None) as folder:
            self.session.report(metrics, folder)

    def _preemption_noticed(self, step: int) -> bool:
        """True at the first report after Ray Train's watcher saw a node of this run being drained for preemption:
        that report writes a checkpoint now, not at the next scheduled one, and the run trains on (Ray Train
        restarts it from there if the node goes). Asked at every report, on every rank (a barrier)."""
        if self.saved_for_preemption or not self.session.preempted():
            return False
        self.saved_for_preemption = True
        if self.session.rank == 0:
            print(f"meap-scale: a node of this run is being preempted: checkpoint at step {step}",
                  flush=True)
        return True

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
        self.placed.net.train()
        losses: list[torch.Tensor] = []
        started = time.perf_counter()
        for step in range(self.state.step + 1, self.last_step + 1):
            loss, grad_norm = self._optimizer_step(step - 1)
            losses.append(loss)
            if self._due(self.spec.log_every, step) or self._due(self.spec.eval_every, step) \
                    or self._checkpoint_due(step):
                self._report(step, self._metrics(step, losses, grad_norm, self._elapsed(started)))
                losses, started = [], time.perf_counter()
            self._maybe_fail(step)
        evals, summary = self._evaluate_suite() if self.state.step == self.spec.steps else ([], {})
        return {"curve": self.state.curve, "final": self.state.curve[-1] if self.state.curve else {},
                "data_digest": hashlib.sha256("".join(self.state.data_digests).encode()).hexdigest(),
                "resumed_from_step": self.state.resumed_from_step, "evals": evals, "eval_summary": summary}

    def _evaluate_suite(self) -> tuple[list[dict], dict]:
        """The run's eval suite on the final model, on rank 0 only (after the last collective; under FSDP every
        rank first helps gather the whole model)."""
        if not self.spec.evals.tasks:
            return [], {}
        model = self.placed.net.lm if self.placed.parallel == "ddp" else None
        if model is None:
            weights = gathered_state_dict(self.placed.net)
            if self.session.rank == 0:
                model = self._build_lm()
                model.load_state_dict(weights)
                model.to(self.device)
        if self.session.rank != 0:
            return [], {}
        from meap_scale.evals.suite import run_suite

        with self._autocast():
            return run_suite(model, self.data, self.spec.evals, self.spec.data.seq_len, self.device)


@contextlib.contextmanager
def _checkpoint_folder(run: TrainingRun, step: int | None) -> Iterator[str | None]:
    """Every rank writes its part of a checkpoint into a temporary folder that lives until the report has
    copied it (Ray Train merges the ranks' folders into one)."""
    if step is None or not run.session.keeps_checkpoints:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=f"meap-ckpt-{step}-") as folder:
        save_checkpoint(folder, run.placed.net, run.optimizer, run.scheduler, run.state, rank=run.session.rank,
                        config=run.placed.net.lm.config)
        if run.session.rank == 0:
            with open(os.path.join(folder, RUN_FILE), "w") as handle:
                handle.write(run.spec.to_json())  # lets `meap-scale eval` rebuild the data and tokenizer
            with open(os.path.join(folder, DATA_FILE), "w") as handle:
                json.dump(run.data.to_dict(), handle)  # or open them where they are, without a preparation
        yield folder
