"""Throughput and model-FLOP utilisation.

MFU = tokens/s x PaLM FLOPs per token / peak dense bf16 FLOP/s of the devices in use (design.md
section 4). Only reported on GPUs whose peak we know; CPU runs report tokens/s alone.
"""

from __future__ import annotations

PEAK_BF16_FLOPS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


def peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in device_name.upper():
            return peak
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_per_device: float | None, devices: int) -> float | None:
    if not peak_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * devices)
