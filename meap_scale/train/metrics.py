"""Model-FLOP utilisation, with its formula named.

MFU = tokens/s x PaLM training FLOPs per token (``meap_scale.models.flops_per_token``: 6 N' + 12 L d T)
/ (dense bf16 peak FLOP/s per device x devices). The peak comes from ``meap_scale.train.devices`` by the
device's exact model, or from ``--peak-flops``; CPU runs and unidentified devices report tokens/s alone.
"""

from __future__ import annotations

MFU_FORMULA = "tokens/s x (6 N' + 12 L d T) / (peak dense bf16 FLOP/s x devices)"


def mfu(tokens_per_s: float, flops_per_token: float, peak_per_device: float | None, devices: int) -> float | None:
    if not peak_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * devices)
