"""Accelerators by exact model: dense bf16 peak FLOP/s (the MFU denominator) and memory per device.

Peaks are the vendors' dense (not 2:4 sparse) bf16 tensor-core figures at boost clock, from the product
datasheets; the SXM and PCIe parts of one chip differ by up to a third, so an "H100" is never assumed to
be the SXM part unless its name says HBM3/SXM. A device we cannot identify gets no peak: its runs report
tokens/s without MFU unless ``--peak-flops`` names the peak: so do the GH200 and GB200 superchips, whose names
contain H200 and B200 but whose GPUs are other parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class Accelerator:
    key: str
    """The name ``--gpu`` and ``plan`` take."""
    peak_bf16_flops: float
    """Dense bf16 tensor-core FLOP/s per device."""
    memory_bytes: int
    """Device memory as ``torch.cuda.get_device_properties().total_memory`` reports it (approximately)."""
    bf16: bool = True


ACCELERATORS: dict[str, Accelerator] = {a.key: a for a in (
    Accelerator("h100-sxm", 989e12, 80 * GIB),
    Accelerator("h100-pcie", 756e12, 80 * GIB),
    Accelerator("h100-nvl", 835e12, 94 * GIB),
    Accelerator("h200", 989e12, 141 * GIB),
    Accelerator("b200", 2250e12, 180 * GIB),
    Accelerator("a100-40gb", 312e12, 40 * GIB),
    Accelerator("a100-80gb", 312e12, 80 * GIB),
    Accelerator("l4", 121e12, 24 * GIB),
    Accelerator("a10g", 70e12, 24 * GIB),
)}

ALIASES = {"h100": "h100-sxm", "a100": "a100-80gb"}
"""Short names ``plan --gpu`` accepts; the long name is printed with every estimate."""

# (pattern over the upper-cased CUDA device name, key), first match wins: the specific parts first.
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H100.*NVL", "h100-nvl"),
    (r"H100.*PCIE", "h100-pcie"),
    (r"H100", "h100-sxm"),  # "NVIDIA H100 80GB HBM3" is the SXM part
    (r"(?<![A-Z])H200", "h200"),  # not GH200 (a Grace Hopper superchip, another memory)
    (r"(?<![A-Z])B200", "b200"),  # not GB200 (its Blackwell GPUs have another peak): no entry, no guess
    (r"A100.*80\s*GB?", "a100-80gb"),
    (r"A100", "a100-40gb"),
    (r"\bL4\b", "l4"),
    (r"\bA10G\b", "a10g"),
)


def accelerator_named(name: str) -> Accelerator:
    """``plan --gpu`` and the pre-launch check: a key or alias, case-insensitive."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ACCELERATORS:
        raise KeyError(f"unknown GPU type {name!r}; known: {', '.join([*ACCELERATORS, *ALIASES])}")
    return ACCELERATORS[key]


def identify(device_name: str) -> Accelerator | None:
    """The accelerator a CUDA device name (``torch.cuda.get_device_name``) or a Ray accelerator type
    (``H100``, ``A100-80G``) stands for; None when it matches none."""
    upper = device_name.upper()
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, upper):
            return ACCELERATORS[key]
    return None


def peak_flops(device_name: str, override: float | None = None) -> float | None:
    """The MFU denominator for one device: ``override`` when given, else the identified device's peak."""
    if override:
        return override
    found = identify(device_name)
    return found.peak_bf16_flops if found else None


def hardware_label(world_size: int, device_name: str) -> str:
    """What a run trained on, as its workers see it (``2x NVIDIA H100 80GB HBM3``, ``1x cpu (x86_64)``): probed
    by the training process itself, never by the process that writes the store row (a 0.1-CPU trial or driver)."""
    if device_name == "cpu":
        import platform

        device_name = f"cpu ({platform.processor() or platform.machine()})"
    return f"{world_size}x {device_name}"
