"""Named fault points, so tests can stop a training at an exact dangerous moment instead of racing a timer.

SIMCLR_S2_FAULT=<point>@<epoch> kills this process with SIGKILL (no clean-up runs, as with a lost machine)
when training reaches `point` in epoch `epoch` (0-based). SIMCLR_S2_PAUSE=<point>@<epoch>:<folder> instead
creates <folder>/paused there and waits until <folder>/resume exists (to hold a run live while a test
starts another). Points:
  checkpoint_write  the new checkpoint is written to its temporary file, not yet renamed into place
  upload            the checkpoint is durable on disk, its upload to the run's artifacts not yet done
  after_upload      uploaded, the epoch's metrics not yet logged
  after_log         the epoch's metrics are logged, the next epoch's checkpoint not yet written
  trial<N>_after_log  tune's trial N has logged the epoch's metrics, not yet reported them to Optuna
  claim@0           a run is made and tagged, its claim on the key not yet written (tracking/tracker.py)
  resumed@0         a resumed run holds its carried-over history, training not yet started
  stream_chunk@<k>  a streamed pack recorded its k-th chunk of rows as safe on disk (bigearthnet/stream.py)
  pack_chunk@<k>  a pack from unpacked files has its k-th chunk of rows written (bigearthnet/packed.py)
  download@<bytes>  a download holds <bytes> bytes of its file (bigearthnet/download.py)
  index_write@0     an index's rejected table is renamed into place, the index not yet (bigearthnet/index.py)
  demo_write@0      make_demo_data's demo is written beside `out`, not yet moved into place (stages/data.py)
  map_row@<k>       predict has written its k-th window row to its draft maps (scenes/inference.py)
Unset, every point is a no-op.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "SIMCLR_S2_FAULT"
PAUSE_ENV = "SIMCLR_S2_PAUSE"
POINTS = ("checkpoint_write", "upload", "after_upload", "after_log")


def point(name: str, epoch: int) -> None:
    """Die (or pause) here when SIMCLR_S2_FAULT (or SIMCLR_S2_PAUSE) names this point and epoch."""
    here = f"{name}@{epoch}"
    if os.environ.get(FAULT_ENV) == here:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.partition(":")[0] == here:
        folder = Path(pause.partition(":")[2])
        (folder / "paused").touch()
        while not (folder / "resume").exists():
            time.sleep(0.1)
