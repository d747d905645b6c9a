"""Memory one training worker needs, from the run's options alone: what ``meap-scale plan`` prints and what
``train`` and studies check before Ray starts.

Conventions (bytes per worker, at the peak: the start of a backward pass once optimiser state exists):
- weights and gradients fp32 (4 bytes per parameter each), AdamW's two moments fp32 (8); FSDP divides
  the three by the workers and adds the gathered copies in flight (the root, i.e. embeddings and head,
  plus two decoder layers, in the gathered dtype); DDP under bf16 autocast adds autocast's bf16 copy of
  the weights (DDP's gradients are views into its communication buckets, ``gradient_as_bucket_view``: no
  second copy);
- activations saved for the backward pass of a Llama decoder layer with SDPA (no L x L scores), per
  token: 16 d (fp32 residual stream into two RMSNorms, input and normalised) + e (4 d + 2 d_kv + 4 d_ffn)
  (the norm outputs cast for the matmuls; q, k, v and attention output; gate, SiLU, up and their
  product), with e = 2 under bf16 autocast and 4 in fp32, plus one layer's worth for the activation
  gradients of the layer whose backward runs. With activation checkpointing a layer keeps only its fp32
  input, plus one layer's full set while it is recomputed;
- the loss: our chunked cross-entropy (``meap_scale.loss``) holds one chunk of fp32 logits, their
  softmax and its cast, the hidden-state gradient and an fp32 head-weight gradient. HF's loss would hold
  (tokens x vocab) logits in e, their fp32 upcast, log-softmax and gradient: shown for comparison;
- on a GPU, ``GPU_RESERVE`` for the CUDA context, kernels, NCCL buffers and allocator fragmentation.
Checked against measured peaks of CPU runs (tests/test_plan.py) and, on a GPU, against
``torch.cuda.max_memory_allocated`` (tests/gpu).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from meap_scale.config import RunSpec
from meap_scale.loss import chunk_rows
from meap_scale.models import param_counts
from meap_scale.train.devices import GIB

GPU_RESERVE = int(1.5 * GIB)
"""CUDA context, cuBLAS workspaces, NCCL buffers and fragmentation, per GPU: an allowance, not a measurement."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer: int
    gathered: int
    """FSDP's gathered parameters in flight, or autocast's bf16 weight copy under DDP."""
    activations: int
    loss: int
    """Our chunked loss; ``plain_loss_logits`` is what full logits would take instead."""
    reserve: int
    plain_loss_logits: int
    activations_if_checkpointed: int
    activations_if_not_checkpointed: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.loss \
            + self.reserve

    def parts(self) -> dict[str, int]:
        """The summed parts, by name, for printing."""
        return {f.name: getattr(self, f.name) for f in fields(self)[:7]}


def _activation_bytes_per_token(spec: RunSpec, element: int) -> tuple[int, int]:
    """(one decoder layer's saved activations, a checkpointed layer's) per token."""
    shape = spec.model.shape
    d, kv = shape.d_model, shape.n_kv_heads * shape.head_dim
    full = 16 * d + element * (4 * d + 2 * kv + 4 * shape.ffn_dim)
    return full, 4 * d


def estimate_memory(spec: RunSpec, vocab_size: int, *, gpu: bool | None = None) -> MemoryEstimate:
    """Peak bytes per worker of ``spec`` at the model's padded ``vocab_size``; ``gpu`` defaults to the run's."""
    gpu = spec.use_gpu if gpu is None else gpu
    bf16 = spec.precision == "bf16" or (spec.precision == "auto" and gpu)
    element = 2 if bf16 else 4
    shape = spec.model.shape
    counts = param_counts(shape, vocab_size, spec.model.tie_embeddings)
    per_layer = counts.non_embedding // shape.n_layers if shape.n_layers else 0
    root = counts.total - shape.n_layers * per_layer
    fsdp = spec.parallel == "fsdp" and spec.workers > 1
    shards = spec.workers if fsdp else 1
    if fsdp:
        gathered = element * (root + 2 * per_layer)
    else:
        gathered = 2 * counts.total if bf16 else 0
    tokens = spec.optim.micro_batch_size * spec.data.seq_len
    layer, kept = _activation_bytes_per_token(spec, element)
    final = 8 * shape.d_model + element * shape.d_model  # final norm and the hidden states the loss reads
    # + one layer's worth of activation gradients while that layer's backward runs
    not_checkpointed = tokens * ((shape.n_layers + 1) * layer + final)
    checkpointed = tokens * (shape.n_layers * kept + 2 * layer + final)
    rows = min(tokens, chunk_rows(vocab_size))
    loss = rows * vocab_size * (4 + 4 + element) + tokens * shape.d_model * element + vocab_size * shape.d_model * 4
    return MemoryEstimate(
        weights=4 * counts.total // shards, gradients=4 * counts.total // shards, optimizer=8 * counts.total // shards,
        gathered=gathered, activations=checkpointed if spec.activation_checkpointing else not_checkpointed,
        loss=loss, reserve=GPU_RESERVE if gpu else 0, plain_loss_logits=tokens * vocab_size * (element + 12),
        activations_if_checkpointed=checkpointed, activations_if_not_checkpointed=not_checkpointed)


def _micro_batches(spec: RunSpec) -> list[int]:
    """Micro-batch sizes that split this run's global batch evenly over its workers, largest first."""
    per_worker = spec.sequences_per_step // spec.workers
    return [m for m in range(per_worker, 0, -1) if per_worker % m == 0]


def fixes(spec: RunSpec, vocab_size: int, capacity: int, *, gpu: bool | None = None) -> list[str]:
    """Option changes that each make ``spec`` fit ``capacity`` bytes per worker, cheapest first: a smaller
    micro-batch (same results, more accumulation), activation checkpointing, FSDP, then both."""
    def fits(candidate: RunSpec) -> bool:
        return estimate_memory(candidate, vocab_size, gpu=gpu).total <= capacity

    found = []
    smaller = [m for m in _micro_batches(spec) if m < spec.optim.micro_batch_size]
    micro = next((m for m in smaller if fits(replace(spec, optim=replace(spec.optim, micro_batch_size=m)))), None)
    if micro:
        found.append(f"--micro-batch-size {micro}")
    if not spec.activation_checkpointing and fits(replace(spec, activation_checkpointing=True)):
        found.append("--activation-checkpointing")
    if spec.parallel != "fsdp" and spec.workers > 1 and fits(replace(spec, parallel="fsdp")):
        found.append("--parallel fsdp")
    both = replace(spec, parallel="fsdp", activation_checkpointing=True)
    if not found and spec.workers > 1 and fits(both):
        found.append("--parallel fsdp --activation-checkpointing")
    return found


def gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB"
