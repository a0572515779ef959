import os

# as tests/conftest.py: the CPU, and numpy's BLAS threads kept from fighting XLA's
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
