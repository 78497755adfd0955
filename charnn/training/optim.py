"""The optimizer: AdamW, with the kernel that suits the device."""

from __future__ import annotations

from collections.abc import Iterable

import torch

# devices with PyTorch's fused AdamW kernel (one call updates every parameter); elsewhere the
# default, one call per kind of operation over all parameters
FUSED_ADAMW = ("cpu", "cuda")
BETA2 = 0.999  # Adam's decay of its running mean of squared gradients (β1 is planned)


def adamw(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    device: torch.device,
    beta1: float,
) -> torch.optim.AdamW:
    """AdamW, fused where the device has the kernel: on a 2-core CPU a 2x256 model's update
    took a third of the default's time (docs/experiments.md#optimiser)."""
    fused = device.type in FUSED_ADAMW
    betas = (beta1, BETA2)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
