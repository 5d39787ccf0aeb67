"""simclr-s2: SimCLR fine-tuning of Sentinel-2 encoders for irrigated land, as an MLflow project.

Importing the package shortens how long torch's OpenMP threads spin before they sleep while they wait
(GOMP_SPINCOUNT=1000, the count libgomp itself uses when it sees more threads than cores) unless
GOMP_SPINCOUNT or OMP_WAIT_POLICY is set; it takes effect when torch loads after this. libgomp's default
spins 300 times longer, and on cores shared with other work a spinning thread burns the core the thread it
waits for needs: beside one busy process the same training steps took 1.6x the wall and 2x the CPU, on
quiet cores 0.97x (`benchmarks/bench_threads.py`, docs/performance.md). The results are the same bits."""

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
