"""Image views (augmentation pipelines) of the CIFAR-LT recipes, in two implementations.

- `reference_transform(name, mean, std)`: per image, torchvision transforms on PIL images; the
  faithful pipeline (DataLoader workers).
- `FastView(name, mean, std)`: the same views for a whole uint8 batch on any device, with
  per-sample randomness; what the GPU training loop uses.

`VIEW_NAMES` is the fixed vocabulary; the method pages `docs/methods/<method>.md` say which recipe uses which view.
The AutoAugment + Cutout view exists per policy (`autoaug_cutout`: the releases'
CIFAR10Policy, `autoaug_cutout_tv`: torchvision's); methods name `autoaug_cutout` and
`autoaug_view(config)` resolves it from the config key `autoaugment_policy`.
"""

from benchmarks import LTBenchError
from benchmarks.data.views.batch import FastView
from benchmarks.data.views.reference import AUTOAUG_VIEWS, AUTOAUGMENT_POLICIES, VIEW_NAMES, reference_transform

AUTOAUG_VIEW = "autoaug_cutout"  # the name methods use in `views`; resolved by `autoaug_view`


def check_autoaugment_policy(config: dict) -> str:
    """The config's `autoaugment_policy` (default "release"), or LTBenchError naming the values."""
    policy = config.get("autoaugment_policy", "release")
    if policy not in AUTOAUGMENT_POLICIES:
        raise LTBenchError(f"autoaugment_policy must be one of {', '.join(AUTOAUGMENT_POLICIES)}, got {policy!r}")
    return policy


def autoaug_view(config: dict) -> str:
    """The AutoAugment + Cutout view name for a run: `autoaug_cutout` for autoaugment_policy
    release (the BCCL / PaCo releases' CIFAR10Policy), `autoaug_cutout_tv` for torchvision."""
    return AUTOAUGMENT_POLICIES[check_autoaugment_policy(config)]


def resolve_views(names, config: dict) -> tuple[str, ...]:
    """A method's CIFAR view names with `autoaug_cutout` replaced by `autoaug_view(config)`."""
    return tuple(autoaug_view(config) if name == AUTOAUG_VIEW else name for name in names)


__all__ = ["AUTOAUG_VIEW", "AUTOAUG_VIEWS", "VIEW_NAMES", "FastView", "autoaug_view", "check_autoaugment_policy",
           "reference_transform", "resolve_views"]
