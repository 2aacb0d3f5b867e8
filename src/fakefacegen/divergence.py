"""Noticing that training diverged: NaN/Inf losses and weights, found with one host sync per step
and named precisely when found. What to do about it (roll back or stop) is the trainer's."""

from __future__ import annotations

import math

import torch
from torch import nn


class DivergenceError(RuntimeError):
    """A loss or weight became NaN/Inf."""


def nonfinite_param(m: nn.Module) -> str | None:
    """The name of the first NaN/Inf parameter of ``m``, or None."""
    for name, p in m.named_parameters():
        if not torch.isfinite(p).all():
            return name
    return None


def weights_maybe_nonfinite(d_net: nn.Module, g_net: nn.Module) -> torch.Tensor:
    """0-d float tensor on the device: 1 if some weight of D or G may be NaN/Inf, else 0.

    One multi-tensor norm per network, no sync; a NaN/Inf weight makes its tensor's norm NaN/Inf
    (a finite tensor whose norm overflows fp32 is a false alarm that nonfinite_weights clears)."""
    norms = [n for m in (d_net, g_net) for n in torch._foreach_norm(list(m.parameters()))]
    return (~torch.isfinite(torch.stack(norms))).any().float()


def nonfinite_weights(d_net: nn.Module, g_net: nn.Module) -> str | None:
    """'the discriminator weight X is NaN/Inf' (D first: it is updated first in a step), or None.

    Called only when weights_maybe_nonfinite raised the flag, to name the weight."""
    found = [
        f"{label} weight {name}"
        for label, m in (("discriminator", d_net), ("generator", g_net))
        if (name := nonfinite_param(m))
    ]
    if not found:
        return None
    return f"the {found[0]} is NaN/Inf" + (f" (and the {found[1]})" if len(found) > 1 else "")


def divergence(step: int, loss_d: float, loss_g: float, bad_weight: str | None) -> str | None:
    """What went wrong in (0-based) ``step``, for the message: a NaN/Inf weight or loss; None if nothing."""
    if bad_weight:
        return f"step {step + 1}: {bad_weight} (loss_d {loss_d}, loss_g {loss_g})"
    if not (math.isfinite(loss_d) and math.isfinite(loss_g)):
        bad = "discriminator (loss_d)" if not math.isfinite(loss_d) else "generator (loss_g)"
        return f"step {step + 1}: the {bad} loss is {loss_d if bad[0] == 'd' else loss_g}"
    return None
