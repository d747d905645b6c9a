"""How a run's model is laid out over its workers, and the module the loop calls.

``ddp``: every worker holds the whole model, optimiser and gradients, and DDP averages gradients.
``fsdp``: FSDP2 (``fully_shard``) shards parameters, gradients and optimiser state over the workers, one
group per decoder layer plus the root (embeddings, final norm, head); on GPUs with bf16 the gathered
parameters are bf16 and gradients are reduced in fp32. The model is built on the meta device and each
worker receives only its shards of the weights rank 0 initialised eagerly with the run's seed, so an FSDP
run starts from exactly the weights a DDP run (or a one-worker run) starts from.

Both wrap ``meap_scale.loss.CausalLM``: the decoder and its chunked loss in one forward pass, so the loss reads the head's
weight while FSDP has it gathered and the whole batch's logits never exist at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from meap_scale.loss import CausalLM


@dataclass
class Placed:
    """The loop's view of the model: ``net`` evaluates, ``forward`` trains (DDP's wrapper where there is one)."""

    net: CausalLM
    forward: nn.Module
    parallel: str

    def gradient_sync(self, enabled: bool):
        """Skip the gradient all-reduce (or reduce-scatter) on all but the last micro-batch of a step."""
        if self.parallel == "fsdp":
            self.net.set_requires_gradient_sync(enabled)
            return contextlib.nullcontext()
        if enabled or not isinstance(self.forward, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return self.forward.no_sync()


def _prepare(lm: nn.Module, activation_checkpointing: bool, compile_layers: bool) -> None:
    if activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile_layers:
        for layer in lm.model.layers:
            layer.compile()


def place_ddp(lm: nn.Module, device: torch.device, world_size: int, *, activation_checkpointing: bool = False,
              compile_layers: bool = False) -> Placed:
    """The eagerly built ``lm`` on ``device``, wrapped in DDP when there are several workers (in a process
    group: without one, as in tests that only build ranks' batches, there is nothing to synchronise)."""
    _prepare(lm, activation_checkpointing, compile_layers)
    net = CausalLM(lm.to(device))
    forward: nn.Module = net
    if world_size > 1 and dist.is_initialized():
        # Gradients as views into DDP's buckets: without it the buckets are a second copy of every gradient (4 bytes
        # per parameter, 4.4 GiB per GPU at 1.1b), which the memory estimate (train/memory.py) does not count.
        forward = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                      gradient_as_bucket_view=True)
    return Placed(net, forward, "ddp")


def _reset_rotary(lm: nn.Module, device: torch.device) -> None:
    """RoPE's inverse frequencies are non-persistent buffers: no state dict carries them, so a model built on
    the meta device computes them again."""
    rotary = lm.model.rotary_emb
    fresh = type(rotary)(lm.config).to(device)
    for name, buffer in fresh.named_buffers():
        setattr(rotary, name, buffer)


def place_fsdp(build_lm, device: torch.device, rank: int, world_size: int, *, bf16: bool,
               activation_checkpointing: bool = False, compile_layers: bool = False) -> Placed:
    """FSDP2 over all workers. ``build_lm()`` initialises the model eagerly (seeded); only rank 0 calls it, on
    the host, and every worker receives its shards of those weights."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    full = {f"lm.{k}": v for k, v in build_lm().state_dict().items()} if rank == 0 else {}
    with torch.device("meta"):
        lm = build_lm()
    _prepare(lm, activation_checkpointing, compile_layers)
    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    for layer in lm.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    net = CausalLM(lm)
    fully_shard(net, mesh=mesh, mp_policy=policy)
    net.to_empty(device=device)
    set_model_state_dict(net, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    _reset_rotary(lm, device)
    dist.barrier()
    return Placed(net, net, "fsdp")


def gathered_state_dict(net: CausalLM) -> dict[str, torch.Tensor]:
    """An FSDP model's whole weights on the host (rank 0's copy is complete), keyed as ``LlamaForCausalLM``'s.
    Every worker must call it: it gathers the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(net, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in state.items()}


def total_norm(norm: torch.Tensor) -> torch.Tensor:
    """``clip_grad_norm_`` returns a DTensor for sharded gradients: the global norm as a plain tensor."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
