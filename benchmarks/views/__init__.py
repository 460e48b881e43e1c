"""Image views (augmentation pipelines) of the CIFAR-LT recipes, in two implementations.

- `reference_transform(name, mean, std)`: per image, torchvision transforms on PIL images; the
  faithful pipeline (DataLoader workers).
- `FastView(name, mean, std)`: the same views for a whole uint8 batch on any device, with
  per-sample randomness; what the GPU training loop uses.

`VIEW_NAMES` is the fixed vocabulary; `docs/methods.md` says which recipe uses which view.
"""

from benchmarks.views.fast import FastView
from benchmarks.views.reference import VIEW_NAMES, reference_transform

__all__ = ["VIEW_NAMES", "FastView", "reference_transform"]
