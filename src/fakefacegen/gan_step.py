"""One GAN training step as the algorithm reads: the D phase (main loss, and on regularisation steps
the R1/R2 penalties fused into the same pass), then the G phase.

This is the one place that knows the losses and the regularisers; the training loop
(``train.Trainer``) only schedules steps, logs, samples and checkpoints. In the terms of
StyleGAN2-ADA's ``loss.py`` the phases are *Dmain* (or *Dboth* when the lazy regularisers fall due:
main loss and penalties from one forward pass of D), then *Gmain*. The fakes drawn for the D phase
are the ones the G phase back-propagates through, so G runs forward once per step.

Regularisers (both lazy: every ``r1_every`` steps, weighted by ``r1_every``, as StyleGAN2):

* R1 (Mescheder et al. 2018): gamma/2 * E ||grad_x D(x)||^2 on real images;
* R2: the same on generated images (the pair R3GAN uses with its relativistic loss).

A step starts from :class:`StepInputs` (what the host draws for it: the batch, flips, noise, the
augmentation's generator); :class:`PlainStep` moves them to the device and runs :class:`GANStep`, and
``step_capture.CapturedStep`` runs the same step from static buffers as a CUDA graph. Both return the
step's statistics (:func:`step_stats`) as one tensor on the device, for one host transfer per step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed as dist
from .augment import diff_augment
from .config import TrainConfig
from .data import to_model_input
from .divergence import weights_maybe_nonfinite
from .losses import d_loss, g_loss, gradient_penalty

STATS = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "r2", "maybe_nonfinite_weights")
"""What :func:`step_stats` holds, in order: the losses, the mean sigmoid of D's logits on real and fake, the
penalties, and 1.0 when some weight of D or G may be NaN/Inf (else 0.0)."""


@dataclass
class StepInputs:
    """What the host draws for one step, for this process's rows of the global batch (nothing on the device yet).

    ``step`` and ``rollbacks`` say which step they were drawn for (the noise depends on both)."""

    step: int
    rollbacks: int
    batch: torch.Tensor
    """uint8 (B, S, S, 3), as ``FaceDataset.__getitems__`` returns it."""
    flip: torch.Tensor | None
    """bool (B,): rows to mirror; None: no flips."""
    z: torch.Tensor
    """(B, z_dim) noise."""
    aug_rng: torch.Generator | None
    """The step's DiffAugment generator (None without train.augment)."""


def augmenter(
    policy: str, rng: torch.Generator | None, rows: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The step's DiffAugment: ``policy`` drawn from ``rng`` for the global batch and sliced to ``rows``
    (first row, global batch size); the identity when ``policy`` is empty."""
    if not policy:
        return lambda x: x
    return lambda x: diff_augment(x, policy, rng, rows=rows)


@dataclass
class StepOutput:
    """What a step leaves for the loop to log and check: 0-d tensors on the device (no host sync)."""

    loss_d: torch.Tensor
    loss_g: torch.Tensor
    logits_real: torch.Tensor
    logits_fake: torch.Tensor
    r1: torch.Tensor
    r2: torch.Tensor


def step_stats(out: StepOutput, d_net: nn.Module, g_net: nn.Module) -> torch.Tensor:
    """The step's numbers named by :data:`STATS`, float32 (7,) on the device, with no host sync."""
    return torch.stack(
        [
            out.loss_d.detach().float(),
            out.loss_g.detach().float(),
            torch.sigmoid(out.logits_real.detach().float()).mean(),
            torch.sigmoid(out.logits_fake.detach().float()).mean(),
            out.r1.detach().float().reshape(()),
            out.r2.detach().float().reshape(()),
            weights_maybe_nonfinite(d_net, g_net),
        ]
    )


class GANStep:
    """Updates D, then G, for one batch. ``G``/``D`` may be DDP-wrapped; the optimisers step them."""

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        autocast: Callable[[], AbstractContextManager],
        cfg: TrainConfig,
    ):
        self.G, self.D, self.opt_g, self.opt_d, self.scaler = G, D, opt_g, opt_d, scaler
        self.autocast, self.cfg = autocast, cfg

    def regularises(self, step: int) -> bool:
        """Whether ``step`` is a lazy-regularisation step (the D phase is then *Dboth*)."""
        t = self.cfg
        return (t.r1_gamma > 0 or t.r2_gamma > 0) and step % t.r1_every == 0

    def __call__(
        self, step: int, real: torch.Tensor, z: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]
    ) -> StepOutput:
        fake, d_out = self.d_phase(step, real, z, augment)
        loss_g = self.g_phase(fake, augment, real=real)
        return StepOutput(loss_g=loss_g, **d_out)

    def d_phase(
        self, step: int, real: torch.Tensor, z: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Dmain / Dboth: maximise log D(x) + log(1 - D(G(z))) (or the hinge/LS objective), plus the penalties."""
        t = self.cfg
        reg = self.regularises(step)
        do_r1, do_r2 = reg and t.r1_gamma > 0, reg and t.r2_gamma > 0
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            fake = self.G(z)
            fake_in = fake.detach()
            if do_r1:
                real.requires_grad_(True)
            if do_r2:
                fake_in.requires_grad_(True)
            logits_real = self.D(augment(real))
            logits_fake = self.D(augment(fake_in))
            loss = d_loss(logits_real, logits_fake, t.loss, real_label=t.real_label, fake_label=t.fake_label)
        zero = torch.zeros((), device=logits_real.device)
        r1 = gradient_penalty(logits_real, real) if do_r1 else zero
        r2 = gradient_penalty(logits_fake, fake_in) if do_r2 else zero
        if do_r1:
            loss = loss + (t.r1_gamma / 2) * r1 * t.r1_every
        if do_r2:
            loss = loss + (t.r2_gamma / 2) * r2 * t.r1_every
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt_d)
        return fake, {"loss_d": loss, "logits_real": logits_real, "logits_fake": logits_fake, "r1": r1, "r2": r2}

    def g_phase(
        self,
        fake: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor],
        real: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gmain: maximise log D(G(z)) (non-saturating), through the fakes of the D phase. The relativistic
        loss (``rpgan``) also asks the updated D about ``real`` (no gradient: G only moves the fakes)."""
        self.opt_g.zero_grad(set_to_none=True)
        # D only passes gradients through to G here: freezing its weights skips their gradients
        # (and, under DDP, no_sync skips an all-reduce of gradients nobody uses).
        self.D.requires_grad_(False)
        with dist.no_sync(self.D), self.autocast():
            logits_real = None
            if self.cfg.loss == "rpgan":
                if real is None:
                    raise ValueError("train.loss=rpgan: the G phase needs the step's real images")
                with torch.no_grad():
                    logits_real = self.D(augment(real.detach()))
            loss = g_loss(self.D(augment(fake)), self.cfg.loss, real=logits_real)
            self.scaler.scale(loss).backward()
        self.D.requires_grad_(True)
        self.scaler.step(self.opt_g)
        self.scaler.update()
        return loss


class PlainStep:
    """One step from :class:`StepInputs`: the batch converted on the device (``data.to_model_input``), the
    noise moved there, the augmentation drawn from the step's generator as it goes; returns step_stats."""

    def __init__(
        self,
        gan_step: GANStep,
        *,
        device: torch.device,
        channels_last: bool,
        augment: str,
        rows: tuple[int, int],
        d_net: nn.Module,
        g_net: nn.Module,
    ):
        self.gan_step, self.device, self.channels_last = gan_step, device, channels_last
        self.augment, self.rows, self.d_net, self.g_net = augment, rows, d_net, g_net

    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        real = to_model_input(inputs.batch, device=self.device, channels_last=self.channels_last, flip=inputs.flip)
        z = inputs.z.to(self.device)
        out = self.gan_step(inputs.step, real, z, augmenter(self.augment, inputs.aug_rng, self.rows))
        return step_stats(out, self.d_net, self.g_net)
