"""Checkpoints as one safetensors file, and the snapshots they are written from.

A checkpoint is a tree of dicts, lists, tuples, numbers, strings, None and tensors (a model's and an
optimiser's state dicts, RNG states, a loop's counters and metric history). Its tensors go into a
safetensors file under their path in the tree ("model/conv1.weight"), each stored once however often the
tree holds it; the rest is JSON in the file's metadata, with each tensor's place marked. Reading runs no
pickled code, and the same tree gives the same bytes. A torch.save checkpoint of the earlier format is
read too, with weights_only=True (tensors and plain containers only), and found under its earlier name
(`train.pt`, `pretrain.pt`) when a run killed before the change resumes.

A snapshot copies a tree's tensors into buffers reused from one checkpoint to the next (pinned host
memory for CUDA tensors, copied without blocking), so the training thread neither allocates nor waits for
the device; the writer waits for the copies in its own thread. A buffer goes back to the pool when the
snapshot holding it is gone, so a buffer being written is never refilled.
"""

from __future__ import annotations

import functools
import json
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from simclr_s2.errors import UserError

METADATA_KEY = "simclr_s2"  # the one metadata entry: its JSON holds the tree (one key keeps the bytes stable)
TENSOR, TUPLE, ITEMS = "$tensor", "$tuple", "$items"  # how the JSON marks a tensor, a tuple, non-str keys
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container: the earlier format
SUFFIX, EARLIER_SUFFIX = ".safetensors", ".pt"  # a checkpoint file's name ends so; the earlier format's did


Key = tuple[Any, ...]  # a buffer's (shape, strides, dtype, pinned)


class BufferPool:
    """Host buffers by (shape, strides, dtype, pinned), handed out for a snapshot and taken back when it is
    gone. A buffer keeps its tensor's memory layout (channels_last weights and their Adam moments), so the
    training thread's copy is a plain one; the writer makes the file's contiguous copies."""

    def __init__(self) -> None:
        self._free: dict[Key, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, like: torch.Tensor) -> tuple[Key, torch.Tensor]:
        """A buffer for `like`'s copy, with the key it goes back under."""
        pinned = like.is_cuda
        key = (tuple(like.shape), like.stride(), like.dtype, pinned)
        with self._lock:
            free = self._free.get(key)
            if free:
                return key, free.pop()
        return key, torch.empty_like(like, device="cpu", pin_memory=pinned)

    def give_back(self, held: list[tuple[Key, torch.Tensor]]) -> None:
        """Runs from a snapshot's finalizer, so whenever a collection drops one: inside torch.export's
        tracing too, where any tensor op would be recorded into the exported graph. So it runs none; the
        keys were made when the buffers were taken."""
        with self._lock:
            for key, buffer in held:
                self._free.setdefault(key, []).append(buffer)


class Snapshot:
    """A tree's state at one moment, its tensors in pooled host buffers; other snapshots it embeds (the best
    epoch's weights) stay alive with it. `write` waits for the copies, then writes the file."""

    def __init__(self, tree: Any, pool: BufferPool) -> None:
        self._own: list[tuple[Key, torch.Tensor]] = []
        self._embedded: list[Snapshot] = []
        self._copied_on_device = False
        self.tree = self._copy(tree, pool)
        self._done = torch.cuda.Event() if self._copied_on_device else None
        if self._done is not None:
            self._done.record()
        weakref.finalize(self, pool.give_back, self._own)

    def _copy(self, node: Any, pool: BufferPool) -> Any:
        if isinstance(node, Snapshot):
            self._embedded.append(node)
            return node.tree
        if isinstance(node, torch.Tensor):
            key, buffer = pool.take(node)
            buffer.copy_(node.detach(), non_blocking=node.is_cuda)
            self._own.append((key, buffer))
            self._copied_on_device |= node.is_cuda
            return buffer
        if isinstance(node, dict):
            return {k: self._copy(v, pool) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return type(node)(self._copy(v, pool) for v in node)
        return node

    def ready(self) -> None:
        """Wait until the device has finished copying into this snapshot and the ones it embeds."""
        for snapshot in self._embedded:
            snapshot.ready()
        if self._done is not None:
            self._done.synchronize()

    def write(self, path: Path) -> None:
        self.ready()
        write_tree(self.tree, path)


class Snapshots:
    """Takes snapshots for one training loop, reusing the buffers of those no longer held."""

    def __init__(self) -> None:
        self._pool = BufferPool()

    def take(self, tree: Any) -> Snapshot:
        return Snapshot(tree, self._pool)


def write_tree(tree: Any, path: Path) -> None:
    """`tree` as a safetensors file at `path` (tensors on the CPU; made contiguous here)."""
    tensors: dict[str, torch.Tensor] = {}
    stored: dict[int, str] = {}

    def encode(node: Any, where: str) -> Any:
        below = f"{where}/" if where else ""
        if isinstance(node, torch.Tensor):
            if id(node) not in stored:
                stored[id(node)] = where
                tensors[where] = node.contiguous()
            return {TENSOR: stored[id(node)]}
        if isinstance(node, dict) and all(isinstance(k, str) for k in node):
            return {k: encode(v, f"{below}{k}") for k, v in node.items()}
        if isinstance(node, dict):
            return {ITEMS: [[k, encode(v, f"{below}{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {TUPLE: [encode(v, f"{below}{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [encode(v, f"{below}{i}") for i, v in enumerate(node)]
        return node

    structure = json.dumps(encode(tree, ""), separators=(",", ":"))
    save_file(tensors, path, metadata={METADATA_KEY: structure})


def resumable(path: Path | None) -> Path | None:
    """The checkpoint to resume from for `path` (named `*.safetensors`): `path`, or the same name in the
    earlier format (`*.pt`) when only that is there; `path` when neither is (so every rank gets a path)."""
    if path is None or path.exists():
        return path
    earlier = path.with_suffix(EARLIER_SUFFIX)
    return earlier if earlier.exists() else path


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is named as a checkpoint file, of either format."""
    return path.suffix in (SUFFIX, EARLIER_SUFFIX)


def read_tree(path: Path, *, weights_only: bool = True) -> Any:
    """The tree a checkpoint file holds: ours (safetensors), or a torch.save file of the earlier format
    (`weights_only` as torch.load takes it). A file that is neither is one line naming it."""
    with open(path, "rb") as fh:
        if fh.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    try:
        with safe_open(str(path), framework="pt") as f:
            structure = (f.metadata() or {}).get(METADATA_KEY)
            if structure is None:
                raise UserError(f"checkpoint {path}: a safetensors file without this project's '{METADATA_KEY}' "
                                "metadata; expected a checkpoint written by a training run")
            return _decode(json.loads(structure), functools.cache(f.get_tensor))  # a stored-once tensor read once
    except SafetensorError as error:
        raise UserError(f"checkpoint {path}: not a checkpoint file (neither safetensors nor torch.save: "
                        f"{str(error)[:200]})") from None


def _decode(node: Any, tensor: Callable[[str], torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensor) for v in node]
    if not isinstance(node, dict):
        return node
    if TENSOR in node:
        return tensor(node[TENSOR])
    if TUPLE in node:
        return tuple(_decode(v, tensor) for v in node[TUPLE])
    if ITEMS in node:
        return {k: _decode(v, tensor) for k, v in node[ITEMS]}
    return {k: _decode(v, tensor) for k, v in node.items()}
