"""Networks: ResNet-32 for CIFAR-sized images, torchvision ResNet-50 / ResNeXt-50 (32x4d) for the
224-pixel datasets, linear and cosine classifiers, projection heads.

Methods compose these into their own `nn.Module`s (see `benchmarks.train.methods`). Backbones are
looked up by name in `BACKBONES`; each returns a module whose forward gives the pooled feature h
and whose `out_dim` says its width.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks import LTBenchError
from benchmarks.train.precision import float32


# ----------------------------------------------------------------------------------------------
# ResNet-32 (He et al. 2016, CIFAR variant; the LDAM-DRW code that BCL, PaCo and BCCL all reuse)
# ----------------------------------------------------------------------------------------------

def _kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal init for conv and linear weights, as the LDAM-DRW ResNet-32 does."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad the channels ("option A")."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = OptionAShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """3x3 conv 16 - three stages of `blocks` basic blocks (16, 32, 64 channels) - global pool.

    `forward` returns the 64-d pooled feature h; classifiers and heads are separate modules.
    """

    out_dim = 64

    def __init__(self, blocks: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.apply(_kaiming_init)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


def resnet32() -> ResNetCifar:
    return ResNetCifar(blocks=5)


# The shallower members of He et al.'s CIFAR family (6n + 2 layers: n = 3, 1), same stem, widths
# and init as ResNet-32: for the CPU track (Fashion-MNIST-LT), where a step of ResNet-32 costs
# too much on two cores. Choosing one is the recipe deviation `backbone`, recorded and reported.
def resnet20() -> ResNetCifar:
    return ResNetCifar(blocks=3)


def resnet8() -> ResNetCifar:
    return ResNetCifar(blocks=1)


# ----------------------------------------------------------------------------------------------
# ResNet-50 / ResNeXt-50 (32x4d): torchvision's, as the ImageNet-LT / iNaturalist releases use them
# ----------------------------------------------------------------------------------------------

def _torchvision_trunk(name: str) -> nn.Module:
    """torchvision's network with random init (weights=None) and its `fc` made the identity.

    The releases build the same network (BCCL and BCL copy torchvision's ResNet and comment `fc`
    out; PaCo takes torchvision's and replaces `fc` by its MLP head), with torchvision's init:
    Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 / bias 0, no zero-init of the last
    BN of a block. `fc = Identity` keeps the module names and the state-dict keys (`conv1`,
    `bn1`, `layer1.0.conv1`, ...) exactly those of the releases' encoders, so their checkpoints
    map onto it by prefix alone; forward returns the 2048-d pooled feature h.
    """
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    model.fc = nn.Identity()
    model.out_dim = 2048
    return model


def resnet50() -> nn.Module:
    return _torchvision_trunk("resnet50")


def resnext50_32x4d() -> nn.Module:
    return _torchvision_trunk("resnext50_32x4d")


BACKBONES = {"resnet32": resnet32, "resnet20": resnet20, "resnet8": resnet8, "resnet50": resnet50, "resnext50_32x4d": resnext50_32x4d}


def build_backbone(name: str) -> nn.Module:
    if name not in BACKBONES:
        raise LTBenchError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name]()


# ----------------------------------------------------------------------------------------------
# Classifiers and heads
# ----------------------------------------------------------------------------------------------

class CosineClassifier(nn.Module):
    """"NormedLinear": logits = normalize(h) @ normalize(W, dim=0) * scale, in float32.

    W is stored as (in_features, num_classes), the layout of the released checkpoints. Init:
    uniform(-1, 1), then every column with norm above `init_max_norm` rescaled to that norm
    (`renorm_(2, 1, max_norm)`). The BCCL release uses max norm 5 (columns start near norm 4.6);
    LDAM-DRW and BCL's official code use unit columns (`renorm_(2, 1, 1e-5).mul_(1e5)`, i.e. 1.0
    here). The logits only see unit columns, but the gradient on W scales with 1 / ||W||, so the
    init norm sets the classifier's early step size.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 1 / 0.03, init_max_norm: float = 1.0):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(in_features, num_classes))
        self.weight.data.uniform_(-1, 1)
        if init_max_norm == 1.0:  # exactly the releases' unit renorm
            self.weight.data.renorm_(2, 1, 1e-5).mul_(1e5)
        else:
            self.weight.data.renorm_(2, 1, init_max_norm)

    @float32
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=1) @ F.normalize(self.weight, dim=0) * self.scale

    def class_weights(self) -> torch.Tensor:
        """The (num_classes, in_features) class vectors (BCL's prototypes are built from these)."""
        return self.weight.t()


class LinearClassifier(nn.Linear):
    """Plain linear classifier (CE, PaCo). init "kaiming": Kaiming-normal weight, as in the
    LDAM-DRW ResNet-32; "default": PyTorch's nn.Linear init (a bare nn.Linear in a release)."""

    def __init__(self, in_features: int, num_classes: int, init: str = "kaiming"):
        super().__init__(in_features, num_classes)
        if init == "kaiming":
            nn.init.kaiming_normal_(self.weight)
        elif init != "default":
            raise LTBenchError(f"unknown linear_init {init!r}; known: kaiming, default")

    @float32
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(h)

    def class_weights(self) -> torch.Tensor:
        return self.weight


def build_classifier(config: dict, in_features: int, num_classes: int) -> nn.Module:
    """The classifier named by `config["classifier"]`, with the config's cosine settings."""
    kind = config["classifier"]
    if kind == "linear":
        return LinearClassifier(in_features, num_classes, config["linear_init"])
    if kind == "cosine":
        return CosineClassifier(in_features, num_classes, config["cosine_scale"], config["cosine_init_max_norm"])
    raise LTBenchError(f"unknown classifier {kind!r}; known: linear, cosine")


class Float32Sequential(nn.Sequential):
    """An `nn.Sequential` that always runs in float32 (see `benchmarks.train.precision`)."""

    @float32
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear - BatchNorm1d - ReLU - Linear: the MLP head of BCCL, BCL and PaCo, in float32.

    Index layout (0, 1, 3) matches the released checkpoints' `head.0`, `head.1`, `head.3` names.
    """
    return Float32Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
