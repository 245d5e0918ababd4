"""`python -m realtime serve|token`."""

import os
import sys

# One BLAS thread per caller, set before numpy loads OpenBLAS. Whisper's feature extraction does a matrix
# product per window; with OpenBLAS's default pool (one spinning thread per core) a single decode burns
# 1.6 cores and a second STT worker adds no throughput (bench/voice_in.py: 10.5 -> 27.9 decodes/s with
# two workers on two cores). Our parallelism comes from worker threads, not from BLAS. Operators can
# still override it in the environment.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from realtime.cli import main  # after the thread limit, on purpose

if __name__ == "__main__":
    sys.exit(main())
