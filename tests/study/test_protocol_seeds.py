"""The study preset runs at least 5 seeds (issue 20.3): compare resamples seeds, so fewer leave its
intervals and tests to chance; custom grids keep the seeds they are given."""

from __future__ import annotations

import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.stages.grid import protocol


def test_the_study_protocol_runs_five_seeds_or_more() -> None:
    assert protocol(specs.Grid(protocol="study")).seeds == (0, 1, 2, 3, 4)
    assert protocol(specs.Grid(protocol="study", seeds=tuple(range(7)))).seeds == tuple(range(7))
    assert protocol(specs.Grid(seeds=(3,))).seeds == (3,)
    with pytest.raises(UserError, match=r"^seeds: protocol=study runs at least 5 seeds .*got 3;"):
        protocol(specs.Grid(protocol="study", seeds=(0, 1, 2)))
