"""CUDA-only checks of the GPU paths; skipped (and listed as skipped) on machines without CUDA.

Run on a GPU machine with ``python -m pytest tests/gpu -v``; bench/gpu_throughput.py measures speed."""

import pytest
import torch
import torch.nn.functional as F

from meap_scale.evals.attention import probe
from meap_scale.loss import linear_cross_entropy
from meap_scale.models import LADDER, build_model
from meap_scale.objectives import mask_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_chunked_loss_under_bf16_autocast_matches_the_plain_loss_on_cuda():
    generator = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(4096, 768, device="cuda", generator=generator, requires_grad=True)
    weight = torch.randn(32000, 768, device="cuda", generator=generator, requires_grad=True) * 0.02
    labels = torch.randint(0, 32000, (4096,), device="cuda", generator=generator)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        chunked = linear_cross_entropy(hidden, weight, labels, rows=1000)
        plain = F.cross_entropy((hidden @ weight.t()).float(), labels)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-2)


def test_training_on_cuda_reports_mfu_and_stays_within_the_memory_estimate():
    from meap_scale.config import DataSpec, ModelSpec, OptimSpec, RunSpec
    from meap_scale.data import prepare_data
    from meap_scale.train.loop import train_loop_per_worker
    from meap_scale.train.memory import estimate_memory

    spec = RunSpec(model=ModelSpec(size="s"), data=DataSpec(seq_len=512),
                   optim=OptimSpec(batch_tokens=512 * 16, micro_batch_size=16), tokens=512 * 16 * 4, use_gpu=True,
                   log_every=2, eval_blocks=4)
    data = prepare_data(spec.data)
    torch.cuda.reset_peak_memory_stats()
    out = train_loop_per_worker({"run": spec.to_dict(), "data": data.to_dict()})
    measured = out["final"]["gpu_memory_bytes"]
    estimated = estimate_memory(spec, data.model_vocab_size)
    assert out["final"]["train_loss"] < out["curve"][0]["train_loss"]
    assert 0.5 < measured / (estimated.total - estimated.reserve) < 1.5
    if "mfu" in out["final"]:  # a GPU of known peak
        assert 0 < out["final"]["mfu"] < 1


def test_the_attention_eval_on_cuda_peaks_no_higher_for_many_probes_than_for_one():
    model = build_model(LADDER["debug"], 256, 2048, seed=0).cuda().eval()

    def peak(probes: int) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for k in range(probes):
            ids = torch.randint(4, 256, (2048,)).tolist()
            probe(model, ids, mask_token_id=3, ratio=0.15, scores=mask_scores(0, [k], 2047))
        return torch.cuda.max_memory_allocated()

    one = peak(1)
    assert peak(8) <= one + 8 * 2 ** 20
