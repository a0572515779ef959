"""The SAGE method: parity with the official code's functions, the sampler, dictionary
training (resume, devices), and the embed -> train-dictionary -> generate commands."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_utils import ROOT, assert_close, fixture, state_dict_from_manifest
from tiny_models import make_class_folders, tiny_psp_file
from sage_jax import checkpoints
from sage_jax.cli import main
from sage_jax.generation import EditingState, SampleOptions, sample_codes
from sage_jax.sage import editing as ed
from sage_jax.sage import losses


# ------------------------------------------------------------- AGE dictionary parity
@pytest.fixture(scope="module")
def age_dict():
    sd, meta = state_dict_from_manifest("age_sparse_dictionary.json")
    return checkpoints.load_dictionary(sd), meta, np.load(fixture("age_sparse_dictionary.npz"))


def test_dictionary_outputs_and_losses_match_reference(age_dict):
    D, meta, ref = age_dict
    assert [list(g) for g in D.groups] == meta["ctor"]["groups"] and D.a_length == meta["ctor"]["A_length"]
    dw = np.concatenate([ref["dw"], np.zeros((4, 12, 512))], axis=1)  # all 18 layers; 6+ unused
    out, codes = D(dw)
    assert_close(out, ref["out_dw"], "edited offsets")
    assert_close(codes[0][:, None], ref["out_code_group0"], "group 0 code")
    assert_close(codes[1][:, None], ref["out_code_group1"], "group 1 code")
    assert_close(losses.sparse_loss(codes), ref["out_sparse_loss"], "sparse loss")
    B = jnp.asarray(ref["class_embeddings"], jnp.float32)
    assert_close(losses.orthogonal_loss(D.A, B, D.edited_layers), ref["out_orthogonal_loss"], "orthogonal loss")
    # the paper's squared Frobenius form
    want = sum(np.sum((np.asarray(D.A)[i].T @ ref["class_embeddings"][:, i].T) ** 2) for i in range(6))
    np.testing.assert_allclose(float(losses.orthogonal_loss(D.A, B, D.edited_layers, "frobenius")), want, rtol=1e-4)


def test_dictionary_state_dict_round_trip_and_paper_groups(age_dict):
    D, _, ref = age_dict
    sd = checkpoints.dictionary_to_state_dict(D.config, D.variables)
    again = checkpoints.load_dictionary({f"ax.{k}": v for k, v in sd.items()})
    dw = np.concatenate([ref["dw"], np.zeros((4, 12, 512))], axis=1)
    np.testing.assert_array_equal(np.asarray(again(dw)[0]), np.asarray(D(dw)[0]))
    from sage_jax.models import init_dictionary
    from sage_jax.nn.dictionary import PAPER_GROUPS
    P = init_dictionary({"groups": PAPER_GROUPS, "style_dim": 16, "a_length": 5}, jax.random.PRNGKey(0))
    out, codes = P(np.ones((2, 18, 16), np.float32))
    assert out.shape == (2, 18, 16) and [c.shape for c in codes] == [(2, 5)] * 3
    cfg = checkpoints.dictionary_config_from_state_dict(checkpoints.dictionary_to_state_dict(P.config, P.variables))
    assert [list(g) for g in cfg["groups"]] == [list(g) for g in PAPER_GROUPS]


def test_checkpoint_without_dictionary_is_a_clear_error():
    with pytest.raises(checkpoints.CheckpointError, match="group encoders"):
        checkpoints.load_dictionary(fixture("tiny_age_layout_ckpt.pt"))  # ax.A only
    with pytest.raises(checkpoints.CheckpointError, match="no attribute dictionary"):
        checkpoints.load_dictionary(fixture("tiny_rosinality_ckpt.pt"))


# -------------------------------------------------------- adaptive editing parity
@pytest.fixture(scope="module")
def editing_ref():
    r = np.load(fixture("sage_adaptive_editing.npz"))
    meta = json.load(open(fixture("sage_adaptive_editing.json")))["meta"]
    ns = r["ns_per_class"]  # (S, per class, E, l)
    S = ns.shape[0]
    labels = np.repeat(np.arange(S), ns.shape[1])
    moments = ed.moments_from_codes(jnp.asarray(ns.reshape(-1, *ns.shape[2:])), jnp.asarray(labels), S)
    return r, meta["params"], moments


def test_back_projection_and_mapping_and_retrieval(editing_ref):
    r, p, _ = editing_ref
    A, B = jnp.asarray(r["A"]), jnp.asarray(r["class_embeddings"])
    assert_close(ed.back_project(ed.pseudo_inverse(A), jnp.asarray(r["dw_probe"])), r["out_pinv_probe"], "pinv")
    e_hat = ed.map_embedding(jnp.asarray(r["latent"]), ed.relevant_basis(B), p["t_B"])
    assert_close(e_hat, r["out_ce_tB10"], "class embedding mapping")
    idx = ed.similar_classes(e_hat, B, p["t_C"])
    np.testing.assert_array_equal(np.asarray(idx), r["out_similar_classes"])


def test_local_statistics_and_edited_codes(editing_ref):
    r, p, moments = editing_ref
    S = r["class_embeddings"].shape[0]
    w = jnp.zeros((S,)).at[jnp.asarray(r["out_similar_classes"])].set(1.0)
    mean, mean_abs, cov = ed.pooled_statistics(moments, w)
    assert_close(mean, r["out_local_mean"], "local mean")
    assert_close(mean_abs, r["out_local_mean_abs"], "local mean |n|")
    assert_close(cov, r["out_local_cov"], "local covariance")
    mask = ed.direction_mask(mean_abs, p["t_A"])
    assert np.all(np.asarray(mask).sum(1) == p["t_A"])


def test_production_sampler_reproduces_the_reference_codes(editing_ref, state):
    """The reference's recorded multivariate-normal draws through ``sample_codes``, the
    function ``generate``, the demo, the sweep and ``evaluate`` run (mapping, retrieval,
    pooled statistics, direction mask, dictionary, alpha, layer placement): its final W+
    codes are the reference sampler's."""
    r, p, _ = editing_ref
    opts = SampleOptions("sage", t_B=(p["t_B"],), retrieval_t_B=p["t_B"], t_C=p["t_C"], t_A=p["t_A"],
                         alpha=p["alpha"])
    layers = tuple(range(p["edited_layers"]))
    draws = jnp.asarray(r["mvn_draws"], jnp.float32)[None, None]  # (Q=1, J=1, E, l)
    shots = jnp.asarray(r["latent"])[None, None]                 # (Q=1, K=1, L, D)
    codes = sample_codes(jax.random.PRNGKey(0), state, shots, n_samples=1, opts=opts, layers=layers, draws=draws)
    assert_close(codes[0], r["out_codes"], "edited W+ codes (production sampler)")
    # it can fail: a wrong alpha or t_A moves the codes far past the bound
    for wrong in (dataclasses.replace(opts, alpha=1.0), dataclasses.replace(opts, t_A=19)):
        bad = sample_codes(jax.random.PRNGKey(0), state, shots, n_samples=1, opts=wrong, layers=layers, draws=draws)
        with pytest.raises(AssertionError):
            assert_close(bad[0], r["out_codes"], "wrong options")


def test_streamed_moments_equal_one_pass_and_numpy(editing_ref):
    r, _, full = editing_ref
    ns = r["ns_per_class"]
    S, per = ns.shape[:2]
    flat, labels = ns.reshape(-1, *ns.shape[2:]), np.repeat(np.arange(S), per)
    perm = np.random.default_rng(0).permutation(len(flat))
    parts = [ed.moments_from_codes(jnp.asarray(flat[i]), jnp.asarray(labels[i]), S) for i in np.array_split(perm, 7)]
    merged = parts[0]
    for m in parts[1:]:
        merged = ed.merge_moments(merged, m)
    for a, b in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(full)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    sel = [1, 5, 9]
    pooled = flat[np.isin(labels, sel)]
    _, _, cov = ed.pooled_statistics(full, jnp.zeros(S).at[jnp.asarray(sel)].set(1.0))
    np.testing.assert_allclose(np.asarray(cov[2]), np.cov(pooled[:, 2].T), rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def state(editing_ref):
    r, _, moments = editing_ref
    emb = jnp.asarray(r["class_embeddings"])
    return EditingState(emb, ed.relevant_basis(emb), moments, jnp.asarray(r["A"]))


def test_sampler_is_keyed_and_vmapped(state, editing_ref):
    r, _, _ = editing_ref
    shots = jnp.stack([jnp.asarray(r["latent"]), jnp.asarray(r["class_embeddings"][0])])[:, None]  # Q=2, K=1
    opts = SampleOptions(t_C=8, t_A=20, alpha=2.0)
    layers = tuple(range(6))
    a = sample_codes(jax.random.PRNGKey(0), state, shots, n_samples=5, opts=opts, layers=layers)
    b = sample_codes(jax.random.PRNGKey(0), state, shots, n_samples=5, opts=opts, layers=layers)
    c = sample_codes(jax.random.PRNGKey(1), state, shots, n_samples=5, opts=opts, layers=layers)
    assert a.shape == (2, 5, 18, 512)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(a - c).max()) > 1e-3
    # samples differ on edited layers only; SAGE edits from the mapped embedding
    e_hat = ed.map_embedding(shots[0], state.basis, 10)
    np.testing.assert_allclose(np.asarray(a[0, :, 6:]), np.broadcast_to(np.asarray(e_hat[6:]), (5, 12, 512)), atol=1e-4)
    assert float(jnp.std(a[0, :, :6], axis=0).mean()) > 1e-3
    # a sample does not depend on how many are drawn
    more = sample_codes(jax.random.PRNGKey(0), state, shots, n_samples=9, opts=opts, layers=layers)
    np.testing.assert_allclose(np.asarray(more[:, :5]), np.asarray(a), atol=1e-5)


def test_modes(state, editing_ref):
    r, _, _ = editing_ref
    shots = jnp.asarray(r["class_embeddings"][3:6])[None] + 0.1  # one class, K=3
    layers = tuple(range(6))
    key = jax.random.PRNGKey(0)
    age = sample_codes(key, state, shots, n_samples=6, opts=SampleOptions("age", t_C=8, t_A=20), layers=layers)
    for j in range(6):  # AGE keeps each shot's own code on untouched layers
        np.testing.assert_allclose(np.asarray(age[0, j, 6:]), np.asarray(shots[0, j % 3, 6:]), atol=1e-6)
    sage_i = sample_codes(key, state, shots, n_samples=2, opts=SampleOptions("sage-i", t_C=8, t_A=20), layers=layers)
    np.testing.assert_allclose(np.asarray(sage_i[0, 0, 6:]), np.asarray(shots[0].mean(0)[6:]), atol=1e-5)
    zero = sample_codes(key, state, shots, n_samples=2, opts=SampleOptions("sage-q", alpha=0.0), layers=layers)
    e_hat = ed.map_embedding(shots[0], state.basis, 10)
    np.testing.assert_allclose(np.asarray(zero[0, 1]), np.asarray(e_hat), atol=1e-4)
    multi = sample_codes(key, state, shots, n_samples=4, opts=SampleOptions(t_B=(1, 30), t_C=8, t_A=20), layers=layers)
    for j, t in enumerate((1, 30, 1, 30)):
        np.testing.assert_allclose(np.asarray(multi[0, j, 6:]),
                                   np.asarray(ed.map_embedding(shots[0], state.basis, t)[6:]), atol=1e-4)
    with pytest.raises(ValueError, match="unknown mode"):
        SampleOptions("magic")


# ------------------------------------------------------------- training + commands
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sage")
    tiny_psp_file(root / "psp.pt")
    make_class_folders(root / "seen", n_classes=6, per_class=4)
    make_class_folders(root / "unseen", n_classes=2, per_class=3, seed=5)
    assert main(["embed", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"),
                 "--out", str(root / "stats.npz"), "--quiet"]) == 0
    return root


def _train(root, workdir, steps, extra=()):
    return main(["train-dictionary", "--checkpoint", str(root / "psp.pt"), "--data", str(root / "seen"),
                 "--stats", str(root / "stats.npz"), "--workdir", str(workdir), "--steps", str(steps),
                 "--batch-size", "4", "--a-length", "8", "--log-every", "1", "--ckpt-every", "2", "--quiet",
                 *extra])


def test_train_dictionary_learns_and_resumes_exactly(tiny_setup, tmp_path):
    root = tiny_setup
    assert _train(root, tmp_path / "straight", 6) == 0
    log = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
    assert [m["step"] for m in log] == [1, 2, 3, 4, 5, 6]
    assert log[-1]["rec"] < log[0]["rec"] and all(np.isfinite(m["loss"]) for m in log)
    assert _train(root, tmp_path / "resumed", 4) == 0   # stops at 4 (checkpoint at 4) ...
    assert _train(root, tmp_path / "resumed", 6) == 0   # ... and continues to 6
    a = checkpoints.load_dictionary(tmp_path / "straight" / "dictionary")
    b = checkpoints.load_dictionary(tmp_path / "resumed" / "dictionary")
    for x, y in zip(jax.tree_util.tree_leaves(a.variables), jax.tree_util.tree_leaves(b.variables)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    resumed_log = [json.loads(l)["step"] for l in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert resumed_log == [1, 2, 3, 4, 5, 6]


def test_pca_init_spans_the_within_class_variation_and_the_measure_sees_it():
    from sage_jax.metrics.stages import dictionary_quality
    from sage_jax.train.dictionary import pca_init

    rng = np.random.default_rng(0)
    S, N, L, D, l = 5, 400, 4, 16, 3
    emb = rng.normal(size=(S, L, D))
    labels = rng.integers(0, S, N)
    basis = np.linalg.qr(rng.normal(size=(L, D, l)))[0]          # the variation: l directions per layer
    codes = emb[labels] + np.einsum("ldk,nlk->nld", basis, rng.normal(size=(N, L, l)) * [3.0, 2.0, 1.0])
    codes += 0.01 * rng.normal(size=codes.shape)                  # and a little noise everywhere
    layers = (0, 2)
    A = pca_init(np.concatenate([codes, codes[:3]]), np.concatenate([labels, [-1, -1, -1]]), emb, layers, l)
    assert A.shape == (2, D, l)
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), np.sqrt(D), rtol=1e-5)   # the random init's scale
    for e, layer in enumerate(layers):   # the same subspace as the variation's
        q = np.linalg.qr(A[e])[0]
        np.testing.assert_allclose(np.linalg.svd(q.T @ basis[layer], compute_uv=False), 1.0, atol=1e-3)
    good = dictionary_quality(A, layers, codes, labels, emb)
    assert good["captured_share"] > 0.99 and abs(good["captured_share"] - good["pca_bound"]) < 1e-6
    assert good["random_share"] == l / D and good["images"] == N
    rand = dictionary_quality(rng.normal(size=(2, D, l)), layers, codes, labels, emb)
    assert rand["captured_share"] < 0.5 and rand["pca_bound"] == pytest.approx(good["pca_bound"])
    with pytest.raises(ValueError, match="a_length 17 exceeds"):
        pca_init(codes, labels, emb, layers, 17)
    # one image per class: no within-class variation to measure, said rather than divided by zero
    one = np.stack([np.flatnonzero(labels == c)[0] for c in range(S)])
    none = dictionary_quality(A, layers, codes[one], labels[one], codes[one])
    assert np.isnan(none["captured_share"]) and "no within-class variation" in none["note"]


def test_train_dictionary_with_pca_init(tiny_setup, tmp_path):
    from sage_jax.data import FolderDataset
    from sage_jax.metrics.stages import dictionary_quality
    from sage_jax.statistics import ClassStatistics

    root = tiny_setup
    assert _train(root, tmp_path / "pca", 1, ["--init", "pca", "--lr", "1e-9"]) == 0
    assert _train(root, tmp_path / "rnd", 1, ["--lr", "1e-9"]) == 0
    psp = checkpoints.load_psp(root / "psp.pt")
    stats = ClassStatistics.load(str(root / "stats.npz"))
    ds = FolderDataset.from_folder(str(root / "seen"), psp.encoder.input_size, classes=stats.class_names)
    x, y = ds.load_batch(range(len(ds)))
    codes = np.asarray(psp.encode(x))
    share = {}
    for name in ("pca", "rnd"):
        d = checkpoints.load_dictionary(tmp_path / name / "dictionary")
        share[name] = dictionary_quality(d.A, d.edited_layers, codes, y, stats.embeddings)
    # 24 images: 8 principal directions of their deviations hold nearly all of it
    assert share["pca"]["captured_share"] == pytest.approx(share["pca"]["pca_bound"], abs=1e-3)
    assert share["rnd"]["captured_share"] < share["pca"]["captured_share"] - 0.2
    with pytest.raises(SystemExit):
        _train(root, tmp_path / "bad", 1, ["--init", "zeros"])


@pytest.mark.heavy
def test_train_step_same_on_1_and_8_devices(tiny_setup, tmp_path):
    root = tiny_setup
    script = f"""
import sys, json, numpy as np, jax
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from sage_jax import checkpoints
from sage_jax.data import FolderDataset
from sage_jax.statistics import ClassStatistics
from sage_jax.train.dictionary import default_config, train_dictionary
from sage_jax import parallel
psp = checkpoints.load_psp({str(root / 'psp.pt')!r})
stats = ClassStatistics.load({str(root / 'stats.npz')!r})
ds = FolderDataset.from_folder({str(root / 'seen')!r}, 32, classes=stats.class_names)
cfg = default_config(); cfg.steps = 2; cfg.batch_size = 8; cfg.a_length = 8; cfg.log_every = 1
out = {{}}
for n in (1, 8):
    D = train_dictionary(psp, stats, ds, cfg, {str(tmp_path)!r} + f'/w{{n}}', quiet=True,
                         mesh=parallel.make_mesh(jax.devices()[:n]))
    out[n] = [json.loads(l)['loss'] for l in open({str(tmp_path)!r} + f'/w{{n}}/metrics.jsonl')]
    np.save({str(tmp_path)!r} + f'/A{{n}}.npy', np.asarray(D.A))
print(json.dumps({{'devices': jax.device_count(), 'losses': out}}))
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    np.testing.assert_allclose(result["losses"]["1"], result["losses"]["8"], rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "A1.npy"), np.load(tmp_path / "A8.npy"), rtol=1e-5, atol=1e-6)


def test_embed_train_generate_end_to_end(tiny_setup, tmp_path):
    root = tiny_setup
    assert _train(root, tmp_path / "w", 3) == 0
    stats = tmp_path / "w" / "class_stats.npz"
    out = tmp_path / "gen"
    for mode in ("sage", "age"):
        assert main(["generate", "--checkpoint", str(root / "psp.pt"), "--stats", str(stats),
                     "--dictionary", str(tmp_path / "w" / "dictionary"), "--shots", str(root / "unseen"),
                     "--k", "2", "--n", "5", "--mode", mode, "--t-c", "3", "--t-a", "4", "--fusion", "pf",
                     "--save-codes", "--out", str(out / mode), "--quiet"]) == 0
        files = sorted(os.listdir(out / mode / "class00"))
        assert sum(f.startswith(f"{mode}_0") for f in files) == 5
        assert sum("fused_pf" in f for f in files) == 5 and "shots.png" in files
        assert np.load(out / mode / "codes.npy").shape == (2, 5, 18, 64)
    meta = json.load(open(out / "sage" / "generation.json"))
    assert meta["options"]["t_C"] == 3 and len(meta["classes"]["class01"]) == 2
    # same seed, same images
    assert main(["generate", "--checkpoint", str(root / "psp.pt"), "--stats", str(stats),
                 "--dictionary", str(tmp_path / "w" / "dictionary"), "--shots", str(root / "unseen"),
                 "--k", "2", "--n", "5", "--t-c", "3", "--t-a", "4", "--save-codes", "--out", str(out / "again"),
                 "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(out / "again" / "codes.npy"), np.load(out / "sage" / "codes.npy"))
    # the bfloat16 generator: the same codes, images within an 8-bit level on average
    assert main(["generate", "--checkpoint", str(root / "psp.pt"), "--stats", str(stats),
                 "--dictionary", str(tmp_path / "w" / "dictionary"), "--shots", str(root / "unseen"),
                 "--k", "2", "--n", "5", "--t-c", "3", "--t-a", "4", "--dtype", "bfloat16", "--save-codes",
                 "--out", str(out / "bf16"), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(out / "bf16" / "codes.npy"), np.load(out / "sage" / "codes.npy"))
    from PIL import Image

    a = np.stack([np.asarray(Image.open(out / "sage" / "class00" / f"sage_{j:04d}.png")) for j in range(5)])
    b = np.stack([np.asarray(Image.open(out / "bf16" / "class00" / f"sage_{j:04d}.png")) for j in range(5)])
    assert np.abs(a.astype(int) - b.astype(int)).mean() <= 1.0


def test_generate_errors(tiny_setup, tmp_path, capsys):
    root = tiny_setup
    base = ["generate", "--checkpoint", str(root / "psp.pt"), "--stats", str(root / "stats.npz"),
            "--out", str(tmp_path / "o"), "--quiet"]
    # K larger than the images given
    assert main(base + ["--shots", str(root / "unseen"), "--k", "4"]) == 2
    assert "fewer than --k 4" in capsys.readouterr().err
    # a class folder with no readable image
    bad = tmp_path / "bad"
    (bad / "broken").mkdir(parents=True)
    (bad / "broken" / "x.png").write_bytes(b"not a png")
    assert main(base + ["--shots", str(bad)]) == 2
    assert "no readable image" in capsys.readouterr().err
    # impossible settings are refused before any work
    assert main(base + ["--shots", str(root / "unseen"), "--t-c", "99"]) == 2
    assert "t_C=99 must lie in [1, 6] (the number of seen classes)" in capsys.readouterr().err
    assert main(base + ["--shots", str(root / "unseen"), "--t-a", "9"]) == 2
    assert "t_A=9 must lie in [1, 8] (the dictionary's A_length)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # no output of any refused call
    # a checkpoint without a dictionary
    tiny_psp_file(tmp_path / "no_ax.pt", with_ax=False)
    assert main(["generate", "--checkpoint", str(tmp_path / "no_ax.pt"), "--stats", str(root / "stats.npz"),
                 "--shots", str(root / "unseen"), "--out", str(tmp_path / "o")]) == 2
    assert "no usable dictionary" in capsys.readouterr().err
    # class statistics made with a different encoder
    tiny_psp_file(tmp_path / "other.pt", seed=7)
    assert main(["generate", "--checkpoint", str(tmp_path / "other.pt"), "--stats", str(root / "stats.npz"),
                 "--shots", str(root / "unseen"), "--out", str(tmp_path / "o")]) == 2
    assert "different encoder" in capsys.readouterr().err


def test_gaussian_factors_cholesky_or_eigh():
    """Positive definite covariances take Cholesky as they are; singular ones a
    slightly jittered Cholesky; the eigendecomposition is the exact fallback, matrix by
    matrix. Either way F F^T = cov, and draws from the factor have the covariance."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 200, 5)).astype(np.float32)
    pd = jnp.asarray(np.einsum("bni,bnj->bij", x, x) / 200)
    F = ed.gaussian_factors(pd)
    np.testing.assert_allclose(np.asarray(F), np.asarray(jnp.linalg.cholesky(pd)), rtol=1e-6)  # the Cholesky path
    low = x[:, :3]                                   # 3 samples in 5 dimensions: rank 3
    singular = jnp.asarray(np.einsum("bni,bnj->bij", low, low) / 3)
    G = ed.gaussian_factors(singular)               # jittered Cholesky: F F^T = cov + 1e-5 * mean variance
    assert np.isfinite(np.asarray(G)).all()
    np.testing.assert_allclose(np.asarray(G @ jnp.swapaxes(G, -1, -2)), np.asarray(singular), atol=1e-4)
    np.testing.assert_allclose(np.asarray(ed.gaussian_factor(singular) @ jnp.swapaxes(ed.gaussian_factor(singular), -1, -2)),
                               np.asarray(singular), atol=1e-4)
    # per matrix: in a batch of one positive definite, one singular and one slightly
    # indefinite matrix (rounding), each takes its own path; the last the eigendecomposition
    bad = jnp.diag(jnp.asarray([1.0, 0.5, 0.2, 0.1, -0.01], jnp.float32))
    H = ed.gaussian_factors(jnp.stack([pd[0], singular[0], bad]))
    np.testing.assert_allclose(np.asarray(H[0]), np.asarray(F[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(H[1]), np.asarray(G[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(H[2] @ H[2].T), np.diag([1.0, 0.5, 0.2, 0.1, 0.0]), atol=1e-6)
    z = jax.random.normal(jax.random.PRNGKey(0), (20000, 3, 5))
    draws = ed.gaussian_draws(jnp.zeros((3, 5)), F, z)  # the sampler's n = mean + F z, (20000, 3, 5)
    emp = np.einsum("nbi,nbj->bij", np.asarray(draws), np.asarray(draws)) / 20000
    np.testing.assert_allclose(emp, np.asarray(pd), atol=0.06)


def test_generate_in_one_call_equals_the_streamed_path(tmp_path):
    """SageGenerator.generate (encode, sample, decode in one compiled call) gives the
    images of encode -> code_blocks -> decode (the streaming path generate uses)."""
    from sage_jax.generation import SageGenerator
    from sage_jax.models import PSPModel, init_dictionary, init_encoder, init_generator
    from sage_jax.statistics import ClassStatistics, fingerprint

    G = init_generator({"size": 16, "style_dim": 64, "n_mlp": 2, "channels": [[4, 16], [8, 8], [16, 8]]},
                       jax.random.PRNGKey(0))
    E = init_encoder(dict(input_size=32, n_styles=18, style_dim=64, widths=(16, 16, 32, 64)), jax.random.PRNGKey(1))
    psp = PSPModel(E, G, np.full((G.n_latent, 64), 0.1, np.float32), {"start_from_latent_avg": True,
                                                                       "output_size": 16})
    d = init_dictionary({"groups": ((0, 1, 2), (3, 4, 5)), "style_dim": 64, "a_length": 4}, jax.random.PRNGKey(2))
    rng = np.random.default_rng(0)
    ns = rng.normal(size=(5 * 7, 6, 4)).astype(np.float32)
    moments = ed.moments_from_codes(jnp.asarray(ns), jnp.asarray(np.repeat(np.arange(5), 7)), 5)
    stats = ClassStatistics([f"c{i}" for i in range(5)], np.full(5, 7), rng.normal(size=(5, 18, 64)).astype(np.float32),
                            fingerprint(E.variables), jax.tree_util.tree_map(np.asarray, moments),
                            fingerprint(d.variables))
    gen = SageGenerator(psp, d, stats)
    shots = jnp.asarray(rng.uniform(-1, 1, (2, 1, 32, 32, 3)).astype(np.float32))
    opts = SampleOptions(t_B=(3,), retrieval_t_B=3, t_C=3, t_A=2)
    key = jax.random.PRNGKey(3)
    fused = gen.generate(key, shots, 7, opts, chunk=4)
    assert fused.shape == (2, 7, 16, 16, 3)
    raw = gen.encode(shots.reshape(2, 32, 32, 3)).reshape(2, 1, 18, 64)
    blocks = list(gen.code_blocks(key, raw, 7, opts, block=3))
    assert [b.shape[1] for b in blocks] == [3, 3, 1]
    codes = jnp.concatenate(blocks, axis=1)
    np.testing.assert_allclose(np.asarray(codes), np.asarray(gen.codes(key, raw, 7, opts)), rtol=1e-6, atol=1e-6)
    streamed = np.concatenate(list(gen.decode(codes.reshape(14, 18, 64), 4))).reshape(2, 7, 16, 16, 3)
    np.testing.assert_allclose(fused, streamed, atol=2e-5)
    assert float(np.abs(fused[0, 0] - fused[0, 1]).max()) > 1e-4   # the samples differ
