"""Bicubic doubling of the 20 m bands (60 x 60 -> 120 x 120 px), bit-identical to torch's and several times
cheaper: the packer's main cost.

torch's CPU kernel (`F.interpolate(mode="bicubic")`, what `bands.resample` calls) computes each output pixel
from its 16 neighbours with per-pixel index and weight loads: 0.66 ms of CPU for a patch's six 20 m bands,
against 0.21 ms here (one thread, AVX-512, load 16 on 2 cores, min of 5 runs of 64 patches). At a
factor of exactly 2 every even output column (row) has one weight set and every odd one the other (the
source position falls a quarter pixel before or after a source pixel), so the same sums are a few
whole-array products of shifted slices of the edge-padded raster. The values stay torch's, bit for bit:

- the same order: each source row's four horizontal taps summed first, left to right, then four of those
  sums vertically (the kernel's nesting), edges clamped as its indices are;
- the same weights (Keys' cubic with a = -0.75 at 1/4 and 3/4: multiples of 1/256, exact in float32);
- the same rounding of each step. Whether torch's build fuses a multiply into the add after it depends on
  the CPU kernel it dispatches to, so the forms of FORMS are here and `_rounding` picks, once per process,
  the cheapest that equals torch on a probe raster; where none does, torch does the work (`stack_bands`).
  The float64 emulation of a fused multiply-add is exact: with uint16 input every product and partial sum
  is a multiple of 2^-16 below 2^18, so float64 holds it exactly and one rounding to float32 is what the
  fused instruction gives.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from simclr_s2.bigearthnet import bands as band_math
from simclr_s2.bigearthnet.bands import PATCH_SIZE

SOURCE = PATCH_SIZE // 2
_A = np.float32(-0.75)
_BLOCK = 16
"""Rasters per block: a block's float64 temporaries stay in the CPU's cache."""


def _keys(t: np.float32) -> tuple[np.float32, ...]:
    """torch's cubic weights of the four taps around a source position `t` past the second tap."""
    one = np.float32(1)

    def near(x: np.float32) -> np.float32:
        return ((_A + 2) * x - (_A + 3)) * x * x + one

    def far(x: np.float32) -> np.float32:
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return far(t + one), near(t), near(one - t), far(one - t + one)


# even outputs read padded taps 0..3 from k at lambda 3/4, odd ones taps 1..4 at 1/4 (padding 2 each side)
_PHASES = ((0, _keys(np.float32(0.75))), (1, _keys(np.float32(0.25))))


def _padded(x: np.ndarray, axis: int, dtype: type = np.float32) -> np.ndarray:
    """`x` with its first and last line along `axis` (-1 or -2) repeated twice more: the kernel's clamped
    edges."""
    shape = list(x.shape)
    shape[axis] += 4
    out = np.empty(shape, dtype)
    body, first, last = ([slice(None)] * x.ndim for _ in range(3))
    body[axis], first[axis], last[axis] = slice(2, -2), slice(0, 2), slice(-2, None)
    out[tuple(body)] = x
    edge = [slice(None)] * x.ndim
    for side, at in ((first, 0), (last, -1)):
        edge[axis] = slice(at, at + 1 or None)
        out[tuple(side)] = x[tuple(edge)]
    return out


def _taps(x: np.ndarray, axis: int, first: int) -> list[np.ndarray]:
    """The four shifted views of the padded `x` along `axis` from tap `first`."""
    index = [slice(None)] * x.ndim
    views = []
    for j in range(first, first + 4):
        index[axis] = slice(j, j + SOURCE)
        views.append(x[tuple(index)])
    return views


Form = Literal["torch-add", "float64", "plain"]
FORMS: tuple[Form, ...] = ("torch-add", "float64", "plain")
"""How the vertical multiply-adds are done, cheapest first: by torch's own `add(alpha=)` (one float32 pass,
fused where its kernel fuses, as the bicubic kernel does in the same build: AVX2 and AVX-512 here), fused
emulated in float64 (exact, three passes), or each product and sum rounded (torch's DEFAULT kernel)."""


def _double_block(x: np.ndarray, form: Form, out: np.ndarray) -> None:
    """(..., 60, 60) float32 whole numbers -> `out` (..., 120, 120) as torch's bicubic computes them."""
    xp = _padded(x, -1)
    rows = np.empty((*x.shape[:-1], PATCH_SIZE), np.float32)
    for phase, w in _PHASES:  # horizontal: the products are exact in float32, so fusing changes nothing
        a = _taps(xp, -1, phase)
        rows[..., phase::2] = ((a[0] * w[0] + a[1] * w[1]) + a[2] * w[2]) + a[3] * w[3]
    hp = _padded(rows, -2)
    s = np.empty((*x.shape[:-2], SOURCE, PATCH_SIZE), np.float32)
    if form == "float64":
        hp64 = hp.astype(np.float64)
        wide = np.empty(s.shape, np.float64)
    for phase, w in _PHASES:  # fused: fma(a0, w0, a1 * w1), then fma(a_j, w_j, sum)
        a = _taps(hp, -2, phase)
        np.multiply(a[1], w[1], out=s)
        for j in (0, 2, 3):
            if form == "torch-add":
                torch.from_numpy(s).add_(torch.from_numpy(a[j]), alpha=float(w[j]))
            elif form == "float64":  # one rounding each, from exact float64
                np.multiply(_taps(hp64, -2, phase)[j], w[j], out=wide)
                wide += s
                np.copyto(s, wide, casting="same_kind")
            else:
                s += a[j] * w[j]
        out[..., phase::2, :] = s


def double(x: np.ndarray, form: Form) -> np.ndarray:
    """(N, C, 60, 60) float32 whole numbers in 0..65535 -> (N, C, 120, 120), a block of rasters at a time."""
    flat = x.reshape(-1, SOURCE, SOURCE)
    out = np.empty((len(flat), PATCH_SIZE, PATCH_SIZE), np.float32)
    for start in range(0, len(flat), _BLOCK):
        _double_block(flat[start : start + _BLOCK], form, out[start : start + _BLOCK])
    return out.reshape(*x.shape[:-2], PATCH_SIZE, PATCH_SIZE)


@functools.cache
def _rounding() -> Form | None:
    """The first of FORMS whose doubling equals `bands.resample` (torch's bicubic) in this process, on a probe of
    random uint16 rasters; None where none does (torch is then used)."""
    probe = np.random.default_rng(0).integers(0, 65536, (2, 3, SOURCE, SOURCE)).astype(np.float32)
    expected = band_math.resample(torch.from_numpy(probe), "bicubic").numpy()
    return next((form for form in FORMS if np.array_equal(double(probe, form), expected)), None)


def stack_bands(
    native: Mapping[str, np.ndarray], bands: Sequence[str], method: str = "bicubic"
) -> np.ndarray:
    """`bands.stack_bands` of uint16 rasters, the same bits, with the 20 m bands' bicubic doubled here (where
    `_rounding` found torch's form) and every other band left to it."""
    doubled = [i for i, b in enumerate(bands) if np.shape(native[b])[-2:] == (SOURCE, SOURCE)]
    if method != "bicubic" or not doubled or any(np.asarray(native[b]).dtype != np.uint16 for b in bands) \
            or _rounding() is None:
        return band_math.stack_bands(native, bands, method)
    stack = np.stack([np.asarray(native[bands[i]], dtype=np.float32) for i in doubled], axis=-3)
    if len(doubled) == len(bands):  # only 20 m bands (the packer's case): no copy into a stack of all
        return double(stack, _rounding())
    rest = [i for i in range(len(bands)) if i not in doubled]
    lead = np.shape(native[bands[0]])[:-2]
    out = np.empty((*lead, len(bands), PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
    out[..., rest, :, :] = band_math.stack_bands(native, [bands[i] for i in rest], method)
    out[..., doubled, :, :] = double(stack, _rounding())
    return out
