import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from meap_scale.models import (LADDER, ModelShape, build_model, flops_per_token, llama_config, padded_vocab_size,
                               param_counts)


def meta_model(shape, vocab, tie=False):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(llama_config(shape, vocab, 128, tie_embeddings=tie))


@pytest.mark.parametrize("size", list(LADDER))
@pytest.mark.parametrize("tie", [False, True])
def test_parameter_counts_equal_hugging_face(size, tie):
    vocab = padded_vocab_size(32001)
    model = meta_model(LADDER[size], vocab, tie)
    counts = param_counts(LADDER[size], vocab, tie)
    assert counts.total == model.num_parameters()
    assert counts.non_embedding == model.num_parameters(exclude_embeddings=True) - counts.output_head


def test_paper_sizes_land_near_their_names():
    totals = {size: param_counts(LADDER[size], 32064).total / 1e9 for size in ("0.1b", "0.3b", "0.5b", "1.1b")}
    assert 0.1 <= totals["0.1b"] < 0.15
    assert 0.3 <= totals["0.3b"] < 0.45
    assert 0.45 <= totals["0.5b"] < 0.6
    assert 1.0 <= totals["1.1b"] < 1.25


def test_debug_model_is_about_a_million_parameters():
    assert 0.5e6 < param_counts(LADDER["debug"], 4096).total < 1.5e6


def test_vocab_is_padded_to_a_multiple_of_64():
    assert padded_vocab_size(32001) == 32064
    assert padded_vocab_size(4096) == 4096


@pytest.mark.parametrize("shape", [LADDER["xs"], ModelShape(3, 96, 6, 2, 256)])
def test_palm_flops_match_counted_matmul_flops_of_a_training_step(shape):
    """With eager attention torch's FLOP counter sees every matmul, attention's included (it does not
    count CPU sdpa kernels); norms, softmax and the embedding gather are FLOPs in neither count."""
    from transformers import LlamaForCausalLM

    vocab, seq, batch = 512, 128, 2
    model = LlamaForCausalLM(llama_config(shape, vocab, seq, attention="eager"))
    tokens = torch.randint(0, vocab, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=tokens).logits.float().sum().backward()
    expected = flops_per_token(shape, vocab, seq).palm * batch * seq
    assert counter.get_total_flops() == pytest.approx(expected, rel=0.01)


def test_six_n_counts_every_parameter():
    counts = param_counts(LADDER["s"], 4096)
    assert flops_per_token(LADDER["s"], 4096, 256).six_n == 6 * counts.total


def test_build_model_is_seeded():
    a, b = (build_model(LADDER["debug"], 256, 32, seed=1) for _ in range(2))
    c = build_model(LADDER["debug"], 256, 32, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
