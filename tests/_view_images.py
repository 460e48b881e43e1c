"""Helpers shared by the view tests: a small set of test images and PIL round trips.

The images cover what the exactness checks need: uniform noise, smooth gradients with noise,
low contrast, a flat image (single level per channel) and a two-level image (N, 3, 32, 32) uint8.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def view_test_images(seed: int = 1) -> torch.Tensor:
    """Noise, smooth gradients with noise, low-contrast, flat and two-level images (14, 3, 32, 32)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.stack([torch.stack([(xx * 7 + yy * 3 + k * 40 + c * 50) % 256 for c in range(3)])
                          for k in range(4)])
    smooth = (smooth * 0.6 + torch.rand(4, 3, 32, 32, generator=g) * 60).clamp(0, 255).to(torch.uint8)
    low = (noise.float() * 0.2 + 90).to(torch.uint8)
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    two = torch.where(torch.rand(1, 1, 32, 32, generator=g) < 0.3, 200, 40).expand(1, 3, 32, 32)
    return torch.cat([noise, smooth, low, flat, two.to(torch.uint8)])


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) uint8 tensor -> RGB PIL image."""
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def assert_exact(fast: torch.Tensor, ref: torch.Tensor) -> None:
    """Same shape and every level equal (max |difference| 0), with the count of differing pixels."""
    assert fast.shape == ref.shape
    diff = (fast.to(torch.int32) - ref.to(torch.int32)).abs()
    assert int(diff.max()) == 0, f"{int((diff > 0).sum())} pixels differ, max {int(diff.max())}"
