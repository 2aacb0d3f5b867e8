"""What every generator network offers, whatever its family: its config, ``z_dim``, ``resolution``,
``forward(z, psi)`` with the noise's shape checked, and a traceable forward for export."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class GeneratorNetwork(nn.Module):
    """Base of the DCGAN's and the style family's generators: z (N, z_dim) -> image (N, 3, R, R)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """Images for noise ``z``; ``psi`` < 1 moves each latent towards the average one (1 = untruncated)."""
        if z.dim() != 2 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"Generator expects noise of shape (N, {self.cfg.z_dim}), got {tuple(z.shape)}")
        return self.truncated(z, psi)

    def truncated(self, z: torch.Tensor, psi: float) -> torch.Tensor:
        """forward without the shape check, truncated by ``psi``."""
        raise NotImplementedError

    def traceable_forward(self, z: torch.Tensor) -> torch.Tensor:
        """forward without the Python checks, for ONNX/TorchScript tracing."""
        return self.truncated(z, 1.0)
