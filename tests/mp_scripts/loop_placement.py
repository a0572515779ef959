"""Run by tests/test_multiprocess_training.py as one or several processes: run_loop on a
'dataset' whose images are their own indices, with a step that records, exactly (small
integers in float32), which example every position of every global batch held. Writes
OUT/p{process}.loads (the indices this process read, one line per step) and, from
process 0, OUT/seen.npy: seen[step, position] = the example's index + 1."""

import json
import os
import sys

from sage_jax import parallel

parallel.initialize()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from sage_jax.train.common import run_loop  # noqa: E402

out, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
N = 40


class IndexData:
    """Example i is an image filled with the value i + 1."""

    def __len__(self):
        return N

    def load_batch(self, idx):
        with open(os.path.join(out, f"p{jax.process_index()}.loads"), "a") as f:
            f.write(json.dumps([int(i) for i in idx]) + "\n")
        idx = np.asarray(idx)
        return np.broadcast_to((idx + 1.0)[:, None, None, None], (len(idx), 2, 2, 1)).astype(np.float32), idx


@jax.jit
def step_fn_jit(seen, x, step):
    # the value at each global position, summed exactly over the 4 pixels, then / 4
    values = jnp.sum(x, axis=(1, 2, 3)) / 4.0
    return seen.at[step].set(values), {"sum": jnp.sum(values)}


def step_fn(state, x, y, step):
    seen, m = step_fn_jit(state["seen"], x, step)
    return {"seen": seen}, m


state = {"seen": jnp.zeros((steps, batch), jnp.float32)}
final, _ = run_loop(workdir=os.path.join(out, "w"), state=state, step_fn=step_fn, dataset=IndexData(),
                    batch_size=batch, data_key=jax.random.PRNGKey(0), mesh=parallel.make_mesh(), steps=steps,
                    log_every=1, ckpt_every=1000, keep=1, desc="placement", quiet=True)
seen = parallel.to_host(final["seen"])
if parallel.is_main():
    np.save(os.path.join(out, "seen.npy"), seen)
