"""The chunked linear cross-entropy against PyTorch's plain loss on full logits."""

import pytest
import torch
import torch.nn.functional as F

from meap_scale.loss import linear_cross_entropy, token_losses


def _problem(rows=37, width=16, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, width, generator=generator, requires_grad=True)
    labels = torch.randint(0, vocab, (rows,), generator=generator)
    labels[[3, 10, 36]] = -100  # ignored positions, one of them in the last, partial chunk
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [1, 7, 37, 100])
def test_chunked_loss_and_gradients_equal_the_plain_loss_on_full_logits(chunk):
    hidden, weight, labels = _problem()
    loss = linear_cross_entropy(hidden, weight, labels, rows=chunk)
    loss.backward()
    chunked = (loss.detach(), hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None
    plain = F.cross_entropy(hidden @ weight.t(), labels)
    plain.backward()
    assert chunked[0] == pytest.approx(plain.item(), rel=1e-6)
    torch.testing.assert_close(chunked[1], hidden.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(chunked[2], weight.grad, rtol=1e-5, atol=1e-7)


def test_an_upstream_scale_reaches_both_gradients():
    hidden, weight, labels = _problem()
    (3.0 * linear_cross_entropy(hidden, weight, labels, rows=5)).backward()
    scaled = hidden.grad.clone()
    hidden.grad = weight.grad = None
    (3.0 * F.cross_entropy(hidden @ weight.t(), labels)).backward()
    torch.testing.assert_close(scaled, hidden.grad, rtol=1e-5, atol=1e-7)


def test_per_token_losses_match_and_ignored_positions_score_zero():
    hidden, weight, labels = _problem()
    chunked = token_losses(hidden, weight, labels, rows=6)
    plain = F.cross_entropy(hidden @ weight.t(), labels, reduction="none")
    torch.testing.assert_close(chunked, plain.detach(), rtol=1e-5, atol=1e-6)
    assert chunked[labels == -100].eq(0).all()


def test_under_bf16_autocast_the_loss_stays_close_to_fp32():
    hidden, weight, labels = _problem(rows=64, width=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = linear_cross_entropy(hidden, weight, labels, rows=16)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(F.cross_entropy(hidden @ weight.t(), labels).item(), rel=2e-2)


def test_all_positions_ignored_gives_zero_not_nan():
    hidden, weight, labels = _problem()
    loss = linear_cross_entropy(hidden, weight, torch.full_like(labels, -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(hidden.grad).all()
