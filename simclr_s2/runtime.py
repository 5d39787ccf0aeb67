"""What every training loop needs from the machine: crash-safe checkpoint files and mixed precision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_atomically(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, then rename over the old checkpoint: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def amp_setup(amp: bool, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """bf16 autocast on GPUs that have it, else fp16 with a gradient scaler; nothing on the CPU."""
    if not amp or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")
