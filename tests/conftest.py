import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# numpy's BLAS threads fight XLA's for the cores (2048-d covariance maths in the FID tests
# ran 8x slower with them on a 2-core machine)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
