import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# numpy's BLAS threads fight XLA's for the cores (2048-d covariance maths in the FID tests
# ran 8x slower with them on a 2-core machine)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# one persistent compilation cache for the whole run (and its subprocesses): the many
# tests that compile the same tiny networks compile them once; never the user's ~/.cache
if "SAGE_JAX_COMPILATION_CACHE" not in os.environ:
    import tempfile

    _cache = os.path.join(tempfile.gettempdir(), f"sage-jax-test-xla-cache-lru-{os.getuid()}")
    os.environ["SAGE_JAX_COMPILATION_CACHE"] = _cache
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    # a size limit turns on JAX's file lock around cache reads and writes, so the two
    # xdist workers never read an entry the other is still writing
    # (sage_jax.parallel.CACHE_MAX_BYTES)
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 * 2**30))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled XLA program after each test module.

    Each executable JAX keeps alive holds about three memory mappings of its own (the
    JIT-compiled code and data), and JAX keeps them for the life of the process. A test
    worker compiles tens of thousands of programs (every eager op on a new shape is
    one), and on Linux a process may hold at most ``vm.max_map_count`` mappings (65,530
    by default): a worker that reached it crashed wherever the next mapping was needed,
    in compiling, serialising or deserialising an executable (the core of one such crash
    held 64,059 mappings). Modules that need a program again read it back from the
    persistent compilation cache."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
