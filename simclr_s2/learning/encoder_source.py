"""Where a classifier's encoder comes from: two sources behind one interface, so training asks the source
instead of asking whether there is a pretrained encoder.

`Scratch` is a randomly initialised encoder, trained whole (the supervised baselines); the other source is
an encoder pretrained here or elsewhere (`tracking.registry.Pretrained`, loaded from the registry, a run
or a state-dict file), whose trainable part the fine-tune chooses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from simclr_s2.bigearthnet.bands import ZSCORE, Bands
from simclr_s2.learning.models import IrrigationClassifier

SCRATCH = "scratch"  # the `pretrained` tag of a classifier whose encoder started from random weights


class EncoderSource(ABC):
    """What a classifier training needs to know of its encoder, and how to build the classifier on it."""

    name: str  # the `pretrained` tag of the classifier: the encoder's alias or name, or SCRATCH
    arch: str
    bands: Bands  # the input bands, in channel order
    scaling: str  # the input scaling the encoder expects (bands.SCALINGS)
    version: str  # the registry version ("simclr-s2-encoder/3"), "" when none
    tags: Mapping[str, str]  # the registry version's tags ({} when none)

    @property
    def label(self) -> str:
        """Who the classifier's run name says trained it: the encoder's name."""
        return self.name

    @abstractmethod
    def classifier(self, dropout: float) -> IrrigationClassifier:
        """A new classifier on this encoder (never the source's own modules: trials share one source)."""

    @abstractmethod
    def trainable(self, asked: str) -> str:
        """The trainable-part policy (learning.config.TRAINABLE) training applies, given the one asked for."""

    @abstractmethod
    def provenance(self) -> dict[str, str]:
        """Run parameters that say where the encoder came from."""


@dataclass(frozen=True)
class Scratch(EncoderSource):
    """A randomly initialised `arch` encoder for `bands`: there is nothing to freeze, so all of it trains."""

    arch: str
    bands: Bands
    name: str = SCRATCH
    scaling: str = ZSCORE
    version: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A baseline's run is named by its network: every scratch encoder is called scratch."""
        return self.arch

    def classifier(self, dropout: float) -> IrrigationClassifier:
        return IrrigationClassifier.from_scratch(self.arch, len(self.bands), dropout=dropout)

    def trainable(self, asked: str) -> str:
        return "all"

    def provenance(self) -> dict[str, str]:
        return {}
