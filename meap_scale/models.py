"""The model size ladder, its Llama configs, and parameter and FLOP accounting.

Conventions (design.md section 4), stated once here because they move scaling exponents:
- ``total`` counts every parameter, embeddings and the (untied) output head included: Chinchilla's N.
- ``non_embedding`` drops the input embedding and the output head: Kaplan's N.
- FLOPs per token: ``6 * total`` (Chinchilla frontier) and PaLM's ``6 * N' + 12 * L * d * T`` with
  ``N'`` = total minus the input embedding lookup (a gather, not a matmul). The PaLM count is the
  numerator of MFU. Both count one forward and one backward pass and ignore norms and softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class ModelShape:
    """Dimensions of a Llama-style decoder (SwiGLU MLP, RMSNorm, RoPE, grouped-query attention)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# Small sizes make CPU smoke studies possible; the 0.1b-1.1b shapes are the MEAP paper's
# (design.md section 3). The paper's 1.1B uses grouped-query attention with 2 key/value groups.
LADDER: dict[str, ModelShape] = {
    "debug": ModelShape(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, ffn_dim=176),
    "xs": ModelShape(n_layers=4, d_model=128, n_heads=4, n_kv_heads=4, ffn_dim=344),
    "s": ModelShape(n_layers=6, d_model=256, n_heads=8, n_kv_heads=8, ffn_dim=688),
    "m": ModelShape(n_layers=8, d_model=384, n_heads=6, n_kv_heads=6, ffn_dim=1024),
    "0.1b": ModelShape(n_layers=12, d_model=768, n_heads=12, n_kv_heads=12, ffn_dim=2048),
    "0.3b": ModelShape(n_layers=24, d_model=1024, n_heads=16, n_kv_heads=16, ffn_dim=2736),
    "0.5b": ModelShape(n_layers=24, d_model=1024, n_heads=16, n_kv_heads=16, ffn_dim=4864),
    "1.1b": ModelShape(n_layers=24, d_model=2048, n_heads=32, n_kv_heads=2, ffn_dim=5632),
}


def padded_vocab_size(vocab_size: int) -> int:
    """Round the tokenizer's vocabulary up to a multiple of 64, as the reference code does (32001 -> 32064)."""
    return math.ceil(vocab_size / VOCAB_MULTIPLE) * VOCAB_MULTIPLE


@dataclass(frozen=True)
class ParamCounts:
    total: int
    non_embedding: int
    input_embedding: int
    output_head: int


def param_counts(shape: ModelShape, vocab_size: int, tie_embeddings: bool = False) -> ParamCounts:
    """Count parameters from the shape alone; ``vocab_size`` is the padded size."""
    d, kv_dim = shape.d_model, shape.n_kv_heads * shape.head_dim
    attention = d * d * 2 + d * kv_dim * 2  # q and o projections, k and v projections
    mlp = 3 * d * shape.ffn_dim  # gate, up, down
    per_layer = attention + mlp + 2 * d  # two RMSNorm weights
    embedding = vocab_size * d
    head = 0 if tie_embeddings else vocab_size * d
    non_embedding = shape.n_layers * per_layer + d  # final RMSNorm
    return ParamCounts(
        total=non_embedding + embedding + head,
        non_embedding=non_embedding,
        input_embedding=embedding,
        output_head=head,
    )


@dataclass(frozen=True)
class FlopsPerToken:
    six_n: float
    palm: float


def flops_per_token(shape: ModelShape, vocab_size: int, seq_len: int, tie_embeddings: bool = False) -> FlopsPerToken:
    """Training FLOPs per token (forward + backward) under both conventions in the module docstring."""
    counts = param_counts(shape, vocab_size, tie_embeddings)
    # With tied embeddings the one vocabulary matrix is still a matmul, as the output head.
    matmul_params = counts.total - counts.input_embedding if counts.output_head else counts.total
    attention = 12 * shape.n_layers * shape.d_model * seq_len
    return FlopsPerToken(six_n=6.0 * counts.total, palm=6.0 * matmul_params + attention)


def llama_config(shape: ModelShape, vocab_size: int, seq_len: int, tie_embeddings: bool = False,
                 rope_theta: float = 10000.0, pad_token_id: int | None = None, attention: str = "sdpa"):
    """A ``transformers.LlamaConfig`` for the shape; sdpa attention by default, no dropout, no biases."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.d_model,
        intermediate_size=shape.ffn_dim,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        max_position_embeddings=seq_len,
        rope_theta=rope_theta,
        tie_word_embeddings=tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        pad_token_id=pad_token_id,
        attn_implementation=attention,
        use_cache=False,
    )


def build_model(shape: ModelShape, vocab_size: int, seq_len: int, *, seed: int, tie_embeddings: bool = False,
                rope_theta: float = 10000.0, pad_token_id: int | None = None,
                zero_embedding_token_id: int | None = None):
    """Instantiate a freshly initialised ``LlamaForCausalLM``; the seed fixes the initial weights.
    ``zero_embedding_token_id``: that token's input embedding is held at zero (``zero_input_embedding``)."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(shape, vocab_size, seq_len, tie_embeddings, rope_theta, pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if zero_embedding_token_id is not None:
        zero_input_embedding(model, zero_embedding_token_id)
    return model


ZERO_EMBEDDING_KEY = "zero_embedding_token_id"
"""The model config's record of ``zero_input_embedding``, so a loaded checkpoint reads inputs the same way."""


def zero_input_embedding(model, token_id: int) -> None:
    """Inputs of ``token_id`` embed to zero: a forward hook on the input embedding zeroes their rows (the
    embedding row then gets no gradient from the input side), and the config records it."""
    setattr(model.config, ZERO_EMBEDDING_KEY, token_id)

    def zeroed(module, args, output):
        return output.masked_fill((args[0] == token_id).unsqueeze(-1), 0.0)

    model.get_input_embeddings().register_forward_hook(zeroed)
