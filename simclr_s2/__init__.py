"""simclr-s2: SimCLR fine-tuning of Sentinel-2 encoders for irrigated land, as an MLflow project.

Importing the package makes torch's OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE) unless the
variable is already set; it takes effect when torch loads after this. libgomp's own default spins first, and
on cores shared with other work a spinning thread burns the core the thread it waits for needs: 2-8x the wall
and CPU for the same training steps on these 2 cores (`benchmarks/bench_threads.py`, docs/performance.md).
The results are the same bits either way. Set OMP_WAIT_POLICY=ACTIVE for a machine with cores to spare."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
