"""Frozen, validated run configuration: the model, objective, data and optimiser specs, and the RunSpec that holds
them with its ``EvalSpec`` (``meap_scale.eval_spec``). What every spec shares is ``meap_scale.spec_base``; which
settings make a run's identity, ``meap_scale.identity``.

Every spec validates itself at construction, so a bad value fails on the driver before Ray or any
data preparation starts, and serialises losslessly to a plain dict (Ray Tune configs and results-store
rows are dicts): ``RunSpec.from_dict(spec.to_dict()) == spec``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from meap_scale.eval_spec import ANSWER_ROOM, EvalSpec
from meap_scale.identity import IDENTITY_VERSION, objective_identity, optim_identity
from meap_scale.models import LADDER, ModelShape
from meap_scale.schedule import cooldown_start, warmup_length
from meap_scale.spec_base import Serialisable, one_of, positive, require
from meap_scale.urls import is_url

OBJECTIVES = ("ntp", "meap", "meap_sft")
MASK_SAMPLINGS = ("per_row", "shared_columns")
SFT_VARIANTS = ("paper", "code")
MASK_WITH = ("mask_token", "random_token", "zero_embedding")
MASK_SCHEDULES = ("constant", "linear_decay")
SCHEDULES = ("cosine", "wsd")
COOLDOWN_SHAPES = ("linear", "1-sqrt")
PRECISIONS = ("auto", "fp32", "bf16")
PARALLELISMS = ("ddp", "fsdp")
DEFAULT_MASK_RATIO = {"ntp": 0.0, "meap": 0.15, "meap_sft": 0.10}


@dataclass(frozen=True)
class ModelSpec(Serialisable):
    size: str = "debug"
    """A ladder name (see ``meap_scale.models.LADDER``) or ``"custom"`` with every dimension given."""
    n_layers: int | None = None
    """Custom sizes only: number of decoder layers."""
    d_model: int | None = None
    """Custom sizes only: hidden width."""
    n_heads: int | None = None
    """Custom sizes only: query heads; must divide d_model."""
    n_kv_heads: int | None = None
    """Custom sizes only: key/value heads (grouped-query attention); must divide n_heads."""
    ffn_dim: int | None = None
    """Custom sizes only: SwiGLU inner width."""
    tie_embeddings: bool = False
    """Share the input embedding and output head (the paper's models do not)."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""

    def __post_init__(self) -> None:
        dims = dict(n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                    n_kv_heads=self.n_kv_heads, ffn_dim=self.ffn_dim)
        if self.size != "custom":
            require(self.size in LADDER,
                     f"unknown model size {self.size!r}; known sizes: {', '.join(LADDER)}, or 'custom'")
            given = [k for k, v in dims.items() if v is not None]
            require(not given, f"model size {self.size!r} fixes its dimensions; drop {given} or use size='custom'")
            return
        missing = [k for k, v in dims.items() if v is None]
        require(not missing, f"model size 'custom' needs every dimension; missing {missing}")
        positive("model", **dims)
        require(self.d_model % self.n_heads == 0,
                 f"model.n_heads={self.n_heads} must divide model.d_model={self.d_model}")
        require(self.n_heads % self.n_kv_heads == 0,
                 f"model.n_kv_heads={self.n_kv_heads} must divide model.n_heads={self.n_heads}")

    @property
    def shape(self) -> ModelShape:
        if self.size != "custom":
            return LADDER[self.size]
        return ModelShape(self.n_layers, self.d_model, self.n_heads, self.n_kv_heads, self.ffn_dim)


@dataclass(frozen=True)
class ObjectiveSpec(Serialisable):
    name: Literal["ntp", "meap", "meap_sft"] = "meap"
    """``ntp``: next-token prediction; ``meap``: MEAP pretraining; ``meap_sft``: MEAP fine-tuning."""
    mask_ratio: float | None = None
    """Fraction of input positions replaced by [MASK], in [0, 1). Default: 0 for ntp, 0.15 for meap
    (the paper's best pretraining ratio), 0.10 for meap_sft (of the answer tokens). ``meap`` at ratio 0
    is the NTP baseline and becomes ``ntp`` (the reference's k = max(1, int(L * ratio)) would mask one
    token per row), in the CLI and in studies alike."""
    mask_sampling: Literal["per_row", "shared_columns"] = "per_row"
    """``per_row``: independent positions per row; ``shared_columns``: one set of positions for the
    whole micro-batch, as the reference code does."""
    exclude_special_tokens: bool = False
    """Never mask BOS/EOS/PAD (the reference code may mask them)."""
    sft_variant: Literal["paper", "code"] = "paper"
    """meap_sft only. ``paper``: sample + masked copy concatenated; ``code``: the released code's
    separate masked row with labels only at masked positions."""
    sft_min_answer_tokens: int = 50
    """meap_sft paper variant: answers shorter than this are trained with plain NTP."""
    mask_with: Literal["mask_token", "random_token", "zero_embedding"] = "mask_token"
    """meap (ntp ignores it, as it ignores every mask setting). What a masked input becomes: ``mask_token``, [MASK] (the paper); ``random_token``, an
    ordinary token drawn uniformly from the vocabulary (BERT-style corruption: the position still carries a
    plausible token); ``zero_embedding``, [MASK] whose input embedding is held at zero (the position
    carries nothing but where it is)."""
    mask_schedule: Literal["constant", "linear_decay"] = "constant"
    """meap (ntp ignores it). ``constant``: ``mask_ratio`` throughout; ``linear_decay``: ``mask_ratio`` at the first step
    falling linearly to 0 at the last (the reference's rule still masks one position per row at ratio 0)."""

    def __post_init__(self) -> None:
        one_of("objective", "name", self.name, OBJECTIVES)
        one_of("objective", "mask_sampling", self.mask_sampling, MASK_SAMPLINGS)
        one_of("objective", "sft_variant", self.sft_variant, SFT_VARIANTS)
        one_of("objective", "mask_with", self.mask_with, MASK_WITH)
        one_of("objective", "mask_schedule", self.mask_schedule, MASK_SCHEDULES)
        require(self.name != "meap_sft" or (self.mask_with, self.mask_schedule) == ("mask_token", "constant"),
                 "objective.mask_with and objective.mask_schedule apply to 'meap' pretraining, not 'meap_sft'")
        if self.name == "meap" and self.mask_ratio == 0:
            object.__setattr__(self, "name", "ntp")
        if self.mask_ratio is None:
            object.__setattr__(self, "mask_ratio", DEFAULT_MASK_RATIO[self.name])
        require(isinstance(self.mask_ratio, (int, float)) and 0.0 <= self.mask_ratio < 1.0,
                 f"objective.mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
        require(self.name != "ntp" or self.mask_ratio == 0.0,
                 f"objective 'ntp' masks nothing; mask_ratio must be 0, got {self.mask_ratio}")
        positive("objective", sft_min_answer_tokens=self.sft_min_answer_tokens)


@dataclass(frozen=True)
class DataSpec(Serialisable):
    source: str = "bundled:kjv"
    """``bundled:kjv`` (shipped, offline), a local .txt/.jsonl/.json/.parquet file or a folder of
    them, the same at an fsspec URL (``s3://``, ``gs://``, ``file://``), or ``hf:NAME[:CONFIG]`` for a
    Hugging Face hub dataset (needs network)."""
    text_field: str = "text"
    """Column holding the document text in JSONL/Parquet/hub sources."""
    tokenizer: str = "bpe"
    """``bpe``: train a byte-level BPE on the training split (cached by corpus hash); otherwise a
    local tokenizer folder or a hub tokenizer name. [MASK], BOS, EOS and PAD are always added."""
    vocab_size: int = 4096
    """Vocabulary size of the trained BPE (special tokens included); ignored for given tokenizers."""
    seq_len: int = 256
    """Model context length L; packed blocks hold L + 1 tokens (inputs and shifted labels)."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation; split by document, so never overlapping training."""
    split_seed: int = 0
    """Seed of the document-level train/validation split."""
    bpe_sample_bytes: int | None = None
    """``bpe`` only: train the BPE on a seeded random sample of this many bytes of the training split's text
    (None: on all of it). A corpus of billions of tokens needs a sample: the trainer runs in one process and
    holds every distinct word; a gigabyte of text settles a 32K vocabulary."""
    cache_dir: str | None = None
    """Where tokenizers and packed blocks are cached: a folder or an fsspec URL (``s3://``, ``gs://``,
    ``file://``); default ``$MEAP_SCALE_CACHE`` or ``~/.cache/meap-scale``."""

    def __post_init__(self) -> None:
        require(bool(self.source.strip()), "data.source must not be empty")
        positive("data", vocab_size=self.vocab_size, seq_len=self.seq_len)
        require(self.vocab_size >= 300 or self.tokenizer != "bpe",
                 f"data.vocab_size={self.vocab_size} is too small for a byte-level BPE (needs >= 300)")
        require(0.0 < self.val_fraction < 0.5, f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")
        require(self.bpe_sample_bytes is None or self.bpe_sample_bytes > 0,
                f"data.bpe_sample_bytes must be positive (or None: all of the training split), got {self.bpe_sample_bytes}")

    @property
    def resolved_cache_dir(self) -> str:
        default = os.environ.get("MEAP_SCALE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "meap-scale")
        chosen = self.cache_dir or default
        return chosen.rstrip("/") if is_url(chosen) else os.path.abspath(os.path.expanduser(chosen))


@dataclass(frozen=True)
class OptimSpec(Serialisable):
    lr: float = 4e-4
    """Peak learning rate (paper: 4e-4)."""
    min_lr: float = 4e-5
    """Floor of the cosine decay (paper: 4e-5)."""
    warmup_fraction: float = 0.1
    """Linear warmup as a fraction of all optimiser steps (paper: 10%)."""
    warmup_steps: int | None = None
    """Linear warmup in optimiser steps, whatever the run's length; replaces warmup_fraction where set. A
    multi-budget run and its decay branches need it: a branch shares its parent's warmup, so only a warmup in
    steps lets it train, step for step, as a standalone WSD run of its budget and this warmup would."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """After warmup: cosine decay to min_lr (paper), or warmup-stable-decay (the peak held, then a cooldown)."""
    cooldown_fraction: float = 0.2
    """WSD only: the share of all steps spent cooling down to min_lr at the end."""
    cooldown_shape: Literal["linear", "1-sqrt"] = "linear"
    """WSD only: the cooldown's shape from the peak to min_lr."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (paper: 0.9, 0.95)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.05
    """AdamW decoupled weight decay, applied to every parameter as the reference code does (paper: 0.05)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (paper: 1.0); 0 disables clipping."""
    batch_tokens: int = 8192
    """Global batch in tokens per optimiser step (paper: 256 x 4096 = 1,048,576)."""
    micro_batch_size: int = 8
    """Sequences per worker per forward/backward; gradient accumulation makes up the global batch."""

    def __post_init__(self) -> None:
        positive("optim", lr=self.lr, batch_tokens=self.batch_tokens, micro_batch_size=self.micro_batch_size,
                  eps=self.eps)
        require(0.0 <= self.min_lr <= self.lr, f"optim.min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        require(0.0 <= self.warmup_fraction < 1.0,
                 f"optim.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        require(self.warmup_steps is None or self.warmup_steps >= 0,
                 f"optim.warmup_steps must not be negative, got {self.warmup_steps}")
        one_of("optim", "schedule", self.schedule, SCHEDULES)
        one_of("optim", "cooldown_shape", self.cooldown_shape, COOLDOWN_SHAPES)
        require(0.0 < self.cooldown_fraction <= 1.0,
                 f"optim.cooldown_fraction must be in (0, 1], got {self.cooldown_fraction}")
        require(self.schedule != "wsd" or self.warmup_fraction + self.cooldown_fraction <= 1.0,
                 f"optim.warmup_fraction + optim.cooldown_fraction must not exceed 1 for a WSD schedule, got "
                 f"{self.warmup_fraction} + {self.cooldown_fraction}")
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                 f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        require(self.weight_decay >= 0.0 and self.grad_clip >= 0.0,
                 "optim.weight_decay and optim.grad_clip must not be negative")


PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
@dataclass(frozen=True)
class RunSpec(Serialisable):
    model: ModelSpec = field(default_factory=ModelSpec)
    """Model size and shape."""
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    """Training objective and its masking settings."""
    data: DataSpec = field(default_factory=DataSpec)
    """Corpus, tokenizer and packing."""
    optim: OptimSpec = field(default_factory=OptimSpec)
    """Optimiser, schedule and batch."""
    evals: EvalSpec = field(default_factory=EvalSpec)
    """Evaluations after training (none by default)."""
    tokens: int = 2_000_000
    """Data budget D in training tokens; steps = tokens // optim.batch_tokens."""
    seed: int = 0
    """Seeds weight init, data order and masks. MEAP and NTP runs with one seed see the same data."""
    workers: int = 1
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool = False
    """One GPU per worker, NCCL; otherwise CPU workers with gloo."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker (fractions allowed, e.g. 0.5 on a 2-core laptop)."""
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How Ray places the workers: PACK fills nodes first; STRICT_SPREAD puts every worker on its own node."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 autocast on GPUs that support it (else fp32, said in the log), fp32 on CPU."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """``ddp``: each worker holds the whole model and optimiser; ``fsdp``: FSDP2 shards parameters, gradients
    and optimiser state over the workers (per decoder layer), for models whose training state does not fit
    one device. Same weights at start, same data, same loss up to float rounding."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass: about a third more compute for
    activation memory of one layer instead of all (``meap-scale plan`` shows both)."""
    compile: bool | None = None
    """``torch.compile`` each decoder layer; default: on for GPU runs, off on CPU (compilation costs more
    than it saves at CPU scale)."""
    peak_flops: float | None = None
    """Peak dense bf16 FLOP/s per device for MFU; default: looked up from the GPU's exact model (see
    ``meap-scale plan --help`` for the table). CPU runs report no MFU."""
    eval_every: int = 0
    """Validation every N optimiser steps (0: only at the end). Validation is always unmasked."""
    eval_blocks: int = 64
    """Validation blocks per evaluation (capped at the held-out split's size)."""
    log_every: int = 10
    """Report training metrics every N optimiser steps."""
    checkpoint_every: int = 0
    """Checkpoint every N optimiser steps (0: only at the end, or ``checkpoints`` per run)."""
    checkpoints: int = 0
    """Where ``checkpoint_every`` is 0: checkpoint this many times per run, evenly, so an interrupt loses
    at most 1/checkpoints of any run, short or long (0: only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept per run, the newest (Ray Train runs and in-process study runs alike)."""
    name: str | None = None
    """A label that leads the run id in place of the objective, size and seed (see ``run_id``)."""
    storage_path: str = "runs"
    """Where Ray Train writes this run's checkpoints: a local folder (one node) or a URL such as
    s3://bucket/path. Not the results store (``--store``), which holds rows of runs, curves and evals."""
    max_failures: int = 0
    """Worker-group restarts Ray Train attempts from the latest checkpoint."""
    fail_at_step: int | None = None
    """Fault injection for tests: rank 1 (or 0 when alone) exits hard after this step on a fresh start."""
    decay_at: tuple[int, ...] = ()
    """Multi-budget run (WSD only): smaller data budgets in tokens. The run holds its peak rate past each and,
    where a run of that budget would start its cooldown, a decay branch continues from its checkpoint and
    cools down: one store row per budget (each branch with the run as its parent) for the cost of the
    longest run plus the branches' cooldowns (``meap_scale.train.branches``)."""
    branch_of: str | None = None
    """Set on a decay branch: the run id of the multi-budget run it branched from (it shares that run's
    warmup, so it is not the same training as a standalone run of its budget)."""
    stop_at_step: int | None = None
    """Stop after this optimiser step with a checkpoint, without the end-of-run evals; the run continues
    from there when started again. How a multi-budget run pauses at its branch points; not identity."""

    def __post_init__(self) -> None:
        positive("run", tokens=self.tokens, workers=self.workers, cpus_per_worker=self.cpus_per_worker,
                  eval_blocks=self.eval_blocks, log_every=self.log_every, keep_checkpoints=self.keep_checkpoints)
        one_of("run", "precision", self.precision, PRECISIONS)
        one_of("run", "placement", self.placement, PLACEMENTS)
        one_of("run", "parallel", self.parallel, PARALLELISMS)
        require(self.peak_flops is None or self.peak_flops > 0, f"run.peak_flops must be positive, got {self.peak_flops}")
        require(self.eval_every >= 0 and self.checkpoint_every >= 0 and self.checkpoints >= 0
                 and self.max_failures >= 0,
                 "run.eval_every, run.checkpoint_every, run.checkpoints and run.max_failures must not be negative")
        require(self.objective.name != "meap_sft",
                 "objective 'meap_sft' needs prompt/answer data; the pretraining loop supports 'ntp' and 'meap'")
        seq_len, batch_tokens = self.data.seq_len, self.optim.batch_tokens
        require(batch_tokens % seq_len == 0,
                 f"optim.batch_tokens={batch_tokens} must be a multiple of data.seq_len={seq_len}")
        per_micro = self.optim.micro_batch_size * self.workers
        require((batch_tokens // seq_len) % per_micro == 0,
                 f"a global batch of {batch_tokens // seq_len} sequences cannot be split into micro-batches of "
                 f"{self.optim.micro_batch_size} on {self.workers} worker(s): choose --batch-tokens as a multiple "
                 f"of {per_micro * seq_len}, or change --workers or --micro-batch-size")
        require(all(n <= seq_len - ANSWER_ROOM for n in self.evals.context_lens),
                 f"evals.context_lens {self.evals.context_lens} leave no room for the answer in the model's context "
                 f"data.seq_len={seq_len}: each must be at most {seq_len - ANSWER_ROOM} (seq_len less "
                 f"{ANSWER_ROOM} tokens for the answer; --eval-context-lens)")
        require(self.tokens >= batch_tokens,
                 f"run.tokens={self.tokens} is less than one global batch (optim.batch_tokens={batch_tokens})")
        require(self.stop_at_step is None or 1 <= self.stop_at_step <= self.steps,
                 f"run.stop_at_step must be in [1, {self.steps}] (the run's steps), got {self.stop_at_step}")
        warmup_room = cooldown_start(self.steps, self.optim.cooldown_fraction) if self.optim.schedule == "wsd" \
            else self.steps
        require(self.optim.warmup_steps is None or self.optim.warmup_steps <= warmup_room,
                 f"optim.warmup_steps={self.optim.warmup_steps} leaves no room in a {self.steps}-step run: at most "
                 f"{warmup_room}" + (" before its cooldown" if self.optim.schedule == "wsd" else ""))
        self._check_decay_at()

    def _check_decay_at(self) -> None:
        """A branch must start on the constant-rate stretch, after the run's warmup: before it, the run's rate
        is not the one a run of the branch's budget would have had."""
        if not self.decay_at:
            return
        require(self.optim.schedule == "wsd", "run.decay_at needs optim.schedule 'wsd' (a cosine run's rate "
                                               "depends on its length from the first step, so it cannot branch)")
        require(self.objective.mask_schedule == "constant",
                 "run.decay_at needs objective.mask_schedule 'constant': a decaying mask ratio depends on each "
                 "run's length from the first step, so a branch could not share the longer run's masks")
        require(self.branch_of is None, "a decay branch (run.branch_of) cannot itself have run.decay_at")
        batch = self.optim.batch_tokens
        require(len(set(d // batch for d in self.decay_at)) == len(self.decay_at),
                 f"run.decay_at {list(self.decay_at)} names a budget twice (in whole batches of {batch} tokens)")
        for tokens in self.decay_at:
            require(1 <= tokens // batch < self.steps, f"run.decay_at {tokens} must be at least one batch "
                                                        f"({batch} tokens) and less than run.tokens={self.tokens}")
        starts = {tokens: cooldown_start(tokens // batch, self.optim.cooldown_fraction) for tokens in self.decay_at}
        earliest = min(starts, key=starts.__getitem__)
        suggested = warmup_length(min(self.decay_at) // batch, self.optim.warmup_fraction)
        require(self.optim.warmup_steps is not None,
                 f"run.decay_at needs optim.warmup_steps (--warmup-steps): each branch shares this run's warmup, "
                 f"so the warmup must be the same number of steps at every budget for a branch to train as a run "
                 f"of its budget would; e.g. --warmup-steps {suggested} (warmup_fraction "
                 f"{self.optim.warmup_fraction:g} of the smallest budget)")
        require(starts[earliest] >= self.warmup,
                 f"run.decay_at {earliest}: its cooldown would start at step {starts[earliest]}, inside the "
                 f"{self.tokens}-token run's {self.warmup}-step warmup; use optim.warmup_steps {starts[earliest]} "
                 f"or less (--warmup-steps), larger budgets or a smaller optim.cooldown_fraction")

    @property
    def warmup(self) -> int:
        """Optimiser steps of linear warmup: ``optim.warmup_steps`` where set, else its fraction of the steps."""
        return warmup_length(self.steps, self.optim.warmup_fraction, self.optim.warmup_steps)

    @property
    def sequences_per_step(self) -> int:
        return self.optim.batch_tokens // self.data.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.optim.batch_tokens

    @property
    def tokens_trained(self) -> int:
        """The tokens the run trains: whole global batches, ``tokens`` rounded down."""
        return self.steps * self.optim.batch_tokens

    @property
    def checkpoint_interval(self) -> int:
        """Optimiser steps between checkpoints (0: only at the end)."""
        if self.checkpoint_every or not self.checkpoints:
            return self.checkpoint_every
        return max(1, self.steps // self.checkpoints)

    @property
    def accumulation_steps(self) -> int:
        return self.sequences_per_step // (self.optim.micro_batch_size * self.workers)

    @property
    def compile_used(self) -> bool:
        """Whether the run compiles its layers: ``compile`` where given, else on GPU only."""
        return self.use_gpu if self.compile is None else self.compile

    @property
    def precision_used(self) -> str:
        """The precision the run trains in: ``auto`` resolves to bf16 on GPU, fp32 on CPU."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if self.use_gpu else "fp32"

    def identity(self) -> dict[str, Any]:
        """Everything that changes the trained weights, and nothing else.

        Model, objective (with its mask sampling), data (not where it is cached), optimiser with the
        global batch (not the micro-batch: accumulation and DDP give the same mean gradient), the tokens
        actually trained, the seed and the precision used. Not identity: workers, CPUs, placement, DDP or
        FSDP, activation checkpointing, compilation (float rounding apart, the same training), micro-batch
        size, logging, validation and checkpoint cadence, evals, names and storage, where a run pauses
        (``stop_at_step``) and which branches it has (``decay_at``). A decay branch's parent (``branch_of``)
        is identity, only where set, and so is FSDP in bf16 (its gathered parameters are bf16 where DDP
        autocasts from fp32 weights: other numerics; in fp32 the two differ only in the order of float sums):
        every other run keeps its id. MEAP
        masks are keyed by stream position (``meap_scale.objectives.StreamPlace``), so they are the same
        whatever the resources.
        """
        data = self.to_dict()
        data["data"].pop("cache_dir")
        if data["data"]["bpe_sample_bytes"] is None:  # added later: runs stored before it keep their identity
            data["data"].pop("bpe_sample_bytes")
        return {"identity_version": IDENTITY_VERSION, "model": data["model"], "data": data["data"],
                "objective": objective_identity(data["objective"]),
                "optim": optim_identity(data["optim"]), "tokens": self.tokens_trained, "seed": self.seed,
                "precision": self.precision_used, **({"branch_of": self.branch_of} if self.branch_of else {}),
                **({"parallel": "fsdp"} if self.parallel == "fsdp" and self.precision_used == "bf16" else {})}

    @property
    def run_id(self) -> str:
        """A readable label (the name, or objective, size and seed) and a hash of the run's ``identity``: the hash
        always, so two configurations under one name never share a stored row or a Ray Train run folder (which
        Ray Train would resume as if it were the same run)."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        if self.name:
            return f"{self.name}-{digest}"
        ratio = f"{self.objective.mask_ratio:g}" if self.objective.name != "ntp" else ""
        return f"{self.objective.name}{ratio}-{self.model.size}-s{self.seed}-{digest}"
