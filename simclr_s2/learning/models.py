"""Encoders, the SimCLR projection head, the irrigation classifier and its trainable-part policy.

The shapes follow STUDY.md: a ResNet (torchvision's, built by `learning.resnet` without importing
torchvision) whose first convolution takes the data's bands, global average pooling, a projection head
Dense 1024 -> ReLU -> Dense 512 -> ReLU -> Dense 128, and a classifier attached to the head's 512-d layer.
Weights are never downloaded: every model starts from random weights or from a state dict the caller
supplies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from simclr_s2.errors import UserError
from simclr_s2.learning.config import ARCHS, TRAINABLE
from simclr_s2.learning.resnet import draw_conv, resnet

HEAD_DIMS = (1024, 512, 128)

_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class Encoder(nn.Module):
    """A ResNet without its classifier: (N, C, H, W) -> (N, feature_dim).

    The ResNet's modules are children of this one under their torchvision names, so the state dict
    reads like a torchvision ResNet's without `fc.*`: encoders trained elsewhere import as they are.
    Any input size works (global average pooling), which keeps tests small.
    """

    def __init__(self, arch: str, in_channels: int) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise UserError(f"arch: unknown architecture {arch!r}, expected one of {', '.join(ARCHS)}")
        if in_channels < 1:
            raise UserError(f"in_channels: expected at least 1 band, got {in_channels}")
        net = resnet(arch)
        conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        draw_conv(conv1.weight)  # as torchvision draws its own first convolution
        net.conv1 = conv1
        for name in _RESNET_PARTS:
            self.add_module(name, getattr(net, name))
        self.arch = arch
        self.in_channels = in_channels
        self.feature_dim: int = net.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in _RESNET_PARTS:
            x = getattr(self, name)(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def build_encoder(arch: str, in_channels: int) -> Encoder:
    """A randomly initialised encoder for `in_channels` bands."""
    return Encoder(arch, in_channels)


class ProjectionHead(nn.Module):
    """SimCLR's projection head g(.) (Chen et al. 2020): Linear -> ReLU -> ... -> Linear.

    With the study's dims (1024, 512, 128) it is Dense 1024 -> ReLU -> Dense 512 -> ReLU -> Dense 128.
    `hidden` stops before the last Linear: the classifier of the study attaches there (512-d).
    """

    def __init__(self, in_dim: int, dims: Sequence[int] = HEAD_DIMS) -> None:
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if len(dims) < 2 or min(dims) < 1:
            raise UserError(f"head dims: expected at least two positive sizes, got {dims}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip((in_dim, *dims[:-1]), dims)):
            if i:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(d_in, d_out))
        self.layers = nn.Sequential(*layers)
        self.dims = dims
        self.hidden_dim = dims[-2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The representation before the last Linear, after its ReLU (512-d in the study)."""
        return self.layers[:-1](x)

    def reset_parameters(self) -> None:
        """Draw every Linear anew with torch's default initialisation, from the global random generator."""
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()


class SimCLRModel(nn.Module):
    """Encoder f(.) followed by projection head g(.); state dict keys start with `encoder.` / `head.`."""

    head_pretrained: bool = True
    """False for a head initialised but never trained (an encoder imported without one): fine-tuning then
    draws it anew and trains it under every policy, since freezing it would freeze a random projection.
    A class default, so a model pickled before the flag existed reads as pretrained."""

    def __init__(self, encoder: Encoder, head: ProjectionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_simclr(arch: str, in_channels: int, head_dims: Sequence[int] = HEAD_DIMS) -> SimCLRModel:
    """A randomly initialised SimCLR model (encoder + projection head)."""
    encoder = build_encoder(arch, in_channels)
    return SimCLRModel(encoder, ProjectionHead(encoder.feature_dim, head_dims))


@dataclass(frozen=True)
class TrainableCounts:
    """Number of scalar weights the optimiser may change, and of those it may not."""

    trainable: int
    frozen: int


class IrrigationClassifier(nn.Module):
    """The study's classifier: encoder -> head.hidden (512) -> Dense 256 ELU -> Dropout -> Dense 256
    ELU -> Dropout -> Dense 1, returning logits of shape (N,).

    The head's last Linear (Dense 128) is kept so the state dict still holds the whole SimCLR model, but
    nothing reads it, so it is frozen under every policy and counted as frozen. `train()` keeps the
    frozen modules in eval mode: under `head2`/`head` the encoder's BatchNorm statistics never move
    (`learning.batchnorm` recomputes them on the target data before training, where wanted). Only
    pretrained weights are ever frozen: with `head_pretrained` False `head2` trains the whole head.
    """

    head_pretrained: bool = True  # a class default too, for classifiers pickled before the flag existed

    def __init__(
        self, encoder: Encoder, head: ProjectionHead, hidden: int = 256, dropout: float = 0.5,
        head_pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.head_pretrained = head_pretrained
        self.classifier = nn.Sequential(
            nn.Linear(head.hidden_dim, hidden),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        self.trainable = "all"  # the policy in force; change it with apply_trainable
        apply_trainable(self, "all")

    @classmethod
    def from_simclr(cls, model: SimCLRModel, hidden: int = 256, dropout: float = 0.5) -> IrrigationClassifier:
        """A classifier on a pretrained model; it shares (does not copy) the model's encoder and head. A
        head never trained is drawn anew here, so the caller's seed decides it as it decides the new layers."""
        if not model.head_pretrained:
            model.head.reset_parameters()
        return cls(model.encoder, model.head, hidden, dropout, head_pretrained=model.head_pretrained)

    @classmethod
    def from_scratch(
        cls,
        arch: str,
        in_channels: int,
        head_dims: Sequence[int] = HEAD_DIMS,
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> IrrigationClassifier:
        """The supervised baseline: the same network, randomly initialised."""
        return cls.from_simclr(build_simclr(arch, in_channels, head_dims), hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head.hidden(self.encoder(x))).squeeze(1)

    def frozen_modules(self) -> list[nn.Module]:
        """The modules the current policy freezes (they stay in eval mode while training)."""
        return _frozen_prefix_modules(self, self.trainable) + [self.head.layers[-1]]

    def train(self, mode: bool = True) -> IrrigationClassifier:
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
        return self


def _check_policy(policy: str) -> None:
    if policy not in TRAINABLE:
        raise UserError(f"trainable: unknown policy {policy!r}, expected one of {', '.join(TRAINABLE)}")


def _frozen_head_layers(model: IrrigationClassifier, policy: str) -> int:
    """How many of the head's first layers `policy` freezes.

    `head2` trains the head's last two Linears (the write-up's "all but the last two layers"): its
    last one is unused by the classifier, so in effect the penultimate Linear (Dense 512) trains. A head
    that was never pretrained is trained whole: frozen, its first Linear would be a random projection.
    """
    return len(model.head.layers) - 3 if policy == "head2" and model.head_pretrained else 0


def _frozen_prefix_modules(model: IrrigationClassifier, policy: str) -> list[nn.Module]:
    """What comes before the first trainable layer, in forward order."""
    if policy == "all":
        return []
    n_head = _frozen_head_layers(model, policy)
    return [model.encoder, model.head.layers[:n_head]] if n_head else [model.encoder]


def apply_trainable(model: IrrigationClassifier, policy: str) -> TrainableCounts:
    """Set `requires_grad` for `policy` (one of TRAINABLE), put frozen parts in eval mode if the model
    is training, and count the weights on each side."""
    _check_policy(policy)
    model.trainable = policy
    frozen_ids = {id(p) for module in model.frozen_modules() for p in module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen_ids)
    model.train(model.training)
    n_frozen = sum(p.numel() for p in model.parameters() if id(p) in frozen_ids)
    n_all = sum(p.numel() for p in model.parameters())
    return TrainableCounts(trainable=n_all - n_frozen, frozen=n_frozen)


class _Suffix(nn.Module):
    """The trainable end of a classifier, from cached features to logits (shares its modules)."""

    def __init__(self, head_part: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.head_part = head_part
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_part(features)).squeeze(1)


def split_for_cache(model: IrrigationClassifier, policy: str) -> tuple[nn.Module, nn.Module] | None:
    """Cut the classifier where `policy`'s trainable part starts, so frozen features can be cached.

    Returns (frozen_prefix, trainable_suffix) with trainable_suffix(frozen_prefix(x)) == model(x) in
    eval mode, exactly (the same modules run the same operations); None for `all`, where nothing is
    frozen. Both parts share the model's modules, so training the suffix trains the model.
    """
    _check_policy(policy)
    prefix_modules = _frozen_prefix_modules(model, policy)
    if not prefix_modules:
        return None
    suffix = _Suffix(model.head.layers[_frozen_head_layers(model, policy) : -1], model.classifier)
    return nn.Sequential(*prefix_modules), suffix


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _head_dims_of(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The head's layer sizes, read from the `head.layers.<i>.weight` shapes."""
    weights = sorted(
        (int(k.split(".")[2]), v)
        for k, v in state_dict.items()
        if k.startswith("head.layers.") and k.endswith(".weight")
    )
    return tuple(v.shape[0] for _, v in weights) or HEAD_DIMS


def _listing(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")


def load_encoder_state(
    state_dict: Mapping[str, torch.Tensor],
    arch: str,
    in_channels: int,
    head_dims: Sequence[int] | None = None,
) -> SimCLRModel:
    """A SimCLRModel holding `state_dict` (keys `encoder.*` and `head.*`, as SimCLRModel writes them;
    a `module.` prefix from DataParallel is dropped). `head_dims` None reads the sizes from the state
    dict. A mismatch raises UserError naming the band counts, or the keys and shapes that differ."""
    state = _strip_prefix(state_dict, "module.")
    conv1 = state.get("encoder.conv1.weight")
    if conv1 is not None and conv1.ndim == 4 and conv1.shape[1] != in_channels:
        raise UserError(f"encoder expects {conv1.shape[1]} bands, data has {in_channels}")
    with torch.device("meta"):
        model = build_simclr(arch, in_channels, _head_dims_of(state) if head_dims is None else head_dims)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{len(missing)} missing keys ({_listing(missing)})" if missing else "",
            f"{len(unexpected)} unexpected keys ({_listing(unexpected)})" if unexpected else "",
            f"{len(shapes)} shape mismatches, given vs expected ({_listing(shapes)})" if shapes else "",
        ]
        raise UserError(
            f"state dict does not fit {arch} with {in_channels} bands: " + "; ".join(p for p in problems if p)
        )
    return loaded(model, state)


M = TypeVar("M", bound=nn.Module)


def loaded(model: M, state: Mapping[str, torch.Tensor]) -> M:
    """`model`, built on the meta device (`with torch.device("meta")`), given a copy of every tensor of
    `state` (strictly). For a model whose weights are all about to be replaced: drawing a ResNet-18's takes
    0.13 CPU-s, a ResNet-50's 0.27, and takes numbers from torch's global generator. Each copy is as copying
    into the drawn weight made it: on the CPU, in the module's dtype (a float16 file gives a float32 model),
    contiguous, sharing no memory with the caller's dict."""
    own = model.state_dict()  # meta tensors, with the module's dtypes
    model.load_state_dict({k: v.to(device="cpu", dtype=own[k].dtype if k in own else v.dtype,
                                   memory_format=torch.contiguous_format, copy=True)
                           for k, v in state.items()}, assign=True)
    return model


T = TypeVar("T", nn.Module, torch.Tensor)


def channels_last(obj: T) -> T:
    """`obj` in channels_last memory format (a module's 4-D weights, or a 4-D tensor).

    ResNets run 1.2-1.5x faster this way on the CPUs here (DESIGN.md); values do not change.
    """
    if isinstance(obj, torch.Tensor) and obj.ndim != 4:
        return obj
    return obj.to(memory_format=torch.channels_last)
