"""The optimisation loop's shared parts: learning-rate schedule and one optimiser step.

The schedule is a linear warm-up over the first ``warmup`` steps times a cosine decay
over the run, where the run's progress is the fraction of steps done (fixed step
count) or of the time budget used. A floor keeps the last steps learning.
"""

from __future__ import annotations

import math


def lr_factor(step: int, progress: float, warmup: int, floor: float) -> float:
    """Multiplier of the base learning rate at ``step``.

    Args:
        step: steps done so far (0-based).
        progress: fraction of the run done, 0..1 (clipped at 1).
        warmup: warm-up steps (at least 1 is used).
        floor: smallest factor returned.

    Returns:
        ``max(min(1, (step + 1) / warmup) * (1 + cos(pi * progress)) / 2, floor)``.
    """
    sched = (min(1.0, (step + 1) / max(1, warmup))
             * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    return max(sched, floor)


def optimizer_step(model, opt, x, loss_of_logits, device: str,
                   channels_last: bool = False) -> float:
    """One forward/backward/update; returns the loss.

    On CUDA the forward pass runs under bf16 autocast and the loss in float32 (with
    ``channels_last``, the input in that memory format too); elsewhere in float32.

    Args:
        model: the torch module, in train mode, on ``device``.
        opt: its optimiser.
        x: float32 input (N, B, H, W) on ``device``.
        loss_of_logits: maps float32 logits (N, C, H, W) to a scalar loss tensor.
        device: ``"cpu"`` or ``"cuda..."``.
        channels_last: use the channels_last memory format on CUDA.
    """
    import torch
    if device.startswith("cuda"):
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = loss_of_logits(logits.float())
    else:
        loss = loss_of_logits(model(x))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.item())
