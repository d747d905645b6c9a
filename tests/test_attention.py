"""Attention measurements on maps whose values are known, and on a real model."""

import math

import pytest
import torch

from meap_scale.evals.attention import attention_maps, entropy, masking_effect, span_share
from meap_scale.models import LADDER, build_model
from meap_scale.objectives import mask_scores


def uniform_causal(length: int) -> torch.Tensor:
    rows = torch.tril(torch.ones(length, length))
    return (rows / rows.sum(dim=-1, keepdim=True)).expand(2, 3, length, length)


def test_entropy_of_uniform_causal_attention_is_the_mean_log_of_the_visible_positions():
    expected = sum(math.log(t + 1) for t in range(8)) / 8
    assert torch.allclose(entropy(uniform_causal(8)), torch.full((2, 3), expected))


def test_span_share_sums_the_last_querys_attention_over_the_span():
    maps = uniform_causal(10)
    assert torch.allclose(span_share(maps, start=2, length=3), torch.full((2, 3), 0.3))


@pytest.fixture(scope="module")
def model():
    return build_model(LADDER["debug"], 256, 64, seed=0).eval()


def test_real_attention_maps_are_causal_distributions(model):
    maps = attention_maps(model, torch.randint(4, 256, (32,)).tolist())
    assert maps.shape == (2, 4, 32, 32)
    assert torch.allclose(maps.sum(dim=-1), torch.ones(2, 4, 32), atol=1e-5)
    assert torch.all(torch.triu(maps, diagonal=1) == 0)
    assert model.config._attn_implementation == "sdpa"  # restored after the probe


def test_masking_effect_compares_clean_and_masked_inputs(model):
    ids = torch.randint(4, 256, (48,)).tolist()
    effect = masking_effect(model, ids, mask_token_id=3, ratio=0.15, scores=mask_scores(0, [0], 47))
    assert effect.masked_positions == 7  # int(48 * 0.15)
    assert math.isfinite(effect.masked_attention_change) and math.isfinite(effect.unmasked_variance_change)
    # masking with the token already there changes nothing: both effects vanish
    flat = [7] * 48
    none = masking_effect(model, flat, mask_token_id=7, ratio=0.15, scores=mask_scores(0, [0], 47))
    assert none.masked_attention_change == pytest.approx(0.0, abs=1e-6)
    assert none.unmasked_variance_change == pytest.approx(0.0, abs=1e-6)
