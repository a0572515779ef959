"""The iterative (ReStyle) encoder option: inference is the iteration it claims to be,
training makes later passes reconstruct better than the first, the option survives a
save and a load, same seed same result, and misuse is refused with a clear message.
pSp encoders (restyle_iterations 0) are untouched: their parity tests live in
test_psp.py and test_convert_and_models.py."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import fixture
from sage_jax import checkpoints
from sage_jax.data.loader import seen_dataset
from sage_jax.demo import ASSET_DIR
from sage_jax.inversion import Inverter, reconstruction_mse
from sage_jax.models import EncoderModel, PSPModel, init_encoder
from sage_jax.train.encoder import train_encoder
from test_train import tiny_cfg

# 18 IR units (fewer to compile) at the tiny widths, 2 passes
RESTYLE = {"model.encoder.num_layers": 18, "psp.restyle_iterations": 2}


@pytest.fixture(scope="module")
def G():
    return checkpoints.load_generator(fixture("tiny_rosinality_ckpt.pt"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ReStyle encoder trained 60 steps on the tiny data for the shipped model's
    generator (one that draws this data: a random generator gives the passes nothing to
    correct), and the data."""
    root = tmp_path_factory.mktemp("restyle")
    cfg = tiny_cfg(**RESTYLE, **{"psp.steps": 60, "psp.log_every": 20, "psp.ckpt_every": 20,
                                 "data.samples_per_class": 8})
    data = seen_dataset(cfg.data)
    decoder = checkpoints.load_psp(os.path.join(ASSET_DIR, "psp"), with_encoder=False).decoder
    psp = train_encoder(cfg.model.encoder, decoder, cfg.psp, data, str(root / "run"), quiet=True)
    return cfg, data, psp, root


def _manual_restyle(psp, x, n):
    """The ReStyle iteration written out with the public models only."""
    E, G = psp.encoder, psp.decoder
    offset = psp.code_offset()
    y = G(jnp.broadcast_to(offset[None], (1, G.n_latent, G.style_dim)), input_is_latent=True)
    y = jnp.broadcast_to(y, x.shape)
    raw = 0.0
    for t in range(n):
        raw = raw + E(jnp.concatenate([x, y], axis=-1), pass_index=t)
        y = G(psp.absolute_codes(raw), input_is_latent=True)
    return raw


def test_encode_is_the_restyle_iteration(G):
    cfg = tiny_cfg(**RESTYLE)
    enc_cfg = dict(cfg.model.encoder.to_dict(), input_nc=6)
    E = init_encoder(enc_cfg, jax.random.PRNGKey(3))
    # two sets of BatchNorm statistics (as training leaves them), made different
    stats = jax.tree_util.tree_map(lambda a: jnp.stack([a, a + 0.5]), E.variables["batch_stats"])
    E = EncoderModel(E.config, {**E.variables, "batch_stats": stats})
    assert E.stat_sets == 2
    avg = np.asarray(G.mean_latent(64, jax.random.PRNGKey(1)))
    psp = PSPModel(E, G, avg, {"restyle_iterations": 3, "input_nc": 6})
    x = jax.random.uniform(jax.random.PRNGKey(2), (3, 32, 32, 3), minval=-1, maxval=1)
    got = np.asarray(psp.encode(x))
    want = np.asarray(_manual_restyle(psp, x, 3))
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-5 * scale, rtol=0)
    # fewer passes are a different (shorter) iteration, not the same numbers
    one = np.asarray(psp.encode(x, iterations=1))
    np.testing.assert_allclose(one, np.asarray(_manual_restyle(psp, x, 1)), atol=1e-5 * scale, rtol=0)
    assert np.abs(one - got).max() > 1e-2 * scale
    # each pass uses its own statistics (pass 3 reuses the last set): with pass 0's for all
    # passes the codes differ
    same_stats = PSPModel(EncoderModel(E.config, {**E.variables, "batch_stats": jax.tree_util.tree_map(
        lambda a: a[:1], stats)}), G, avg, psp.config)
    assert np.abs(np.asarray(same_stats.encode(x)) - got).max() > 1e-2 * scale
    # invert and the Inverter run all the passes
    np.testing.assert_array_equal(np.asarray(psp.invert(x)[0]), got)
    np.testing.assert_array_equal(np.asarray(Inverter(psp)(x)), got)


def test_later_passes_reconstruct_better(trained):
    _, data, psp, _ = trained
    assert psp.restyle_iterations == 2 and psp.encoder.input_nc == 6
    x, _ = data.load_batch(range(32))
    first = reconstruction_mse(psp, x, psp.encode(x, iterations=1))
    both = reconstruction_mse(psp, x, psp.encode(x))
    assert both.mean() < 0.9 * first.mean(), (first.mean(), both.mean())   # measured: 0.048 vs 0.057


def test_training_logs_every_pass_saves_loads_and_resumes_exactly(trained):
    cfg, data, psp, root = trained
    log = [json.loads(line) for line in open(root / "run" / "metrics.jsonl")]
    assert [m["step"] for m in log] == [20, 40, 60]
    assert {"l2", "l2_first", "latent", "loss"} <= set(log[-1])
    loaded = checkpoints.load_psp(root / "run" / "psp")
    assert loaded.restyle_iterations == 2 and loaded.config["input_nc"] == 6
    # one set of BatchNorm statistics per pass, and the passes' inputs differ, so do they
    assert loaded.encoder.stat_sets == 2
    mean0 = loaded.encoder.variables["batch_stats"]["backbone"]["input_bn"]["running_mean"]
    assert float(jnp.abs(mean0[0] - mean0[1]).max()) > 1e-3
    x, _ = data.load_batch(range(4))
    np.testing.assert_array_equal(np.asarray(loaded.encode(x)), np.asarray(psp.encode(x)))
    # interrupted at step 20 (its checkpoint), resumed to 60: the same encoder
    train_encoder(cfg.model.encoder, psp.decoder, cfg.psp, data, str(root / "b"), quiet=True, stop_after=20)
    again = train_encoder(cfg.model.encoder, psp.decoder, cfg.psp, data, str(root / "b"), quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(psp.encoder.variables),
                    jax.tree_util.tree_leaves(again.encoder.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_misuse_is_refused(trained):
    _, data, psp, _ = trained
    G = psp.decoder
    x, _ = data.load_batch(range(2))
    with pytest.raises(ValueError, match="iterative .ReStyle. encoder.*PSPModel.encode"):
        psp.encoder(x)
    with pytest.raises(ValueError, match="iterations >= 1"):
        psp.encode(x, iterations=0)
    with pytest.raises(ValueError, match="needs restyle_iterations > 0"):
        PSPModel(psp.encoder, G, psp.latent_avg, {"input_nc": 6})
    plain = init_encoder(tiny_cfg(**RESTYLE).model.encoder, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="needs restyle_iterations 0"):
        PSPModel(plain, G, psp.latent_avg, {"restyle_iterations": 2})
    with pytest.raises(ValueError, match="whole number >= 0"):
        PSPModel(plain, G, psp.latent_avg, {"restyle_iterations": -1})
