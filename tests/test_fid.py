"""FID Inception-v3 (pytorch-fid 0.3.0) against ``../shared/fixtures/fid_inception_v3.{json,npz}``,
its converter, and the FID / KID metrics."""

import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch_pickle
from fixture_utils import assert_close, fixture, nchw_to_nhwc, state_dict_from_manifest
from sage_jax.checkpoints import CheckpointError, load_inception
from sage_jax.checkpoints.inception import convert_inception, inception_entries, inception_to_state_dict
from sage_jax.metrics.fid import (Statistics, cached_statistics, extract_features, feature_statistics, fid,
                                  frechet_distance, kernel_inception_distance, kid, trace_sqrt_product)
from sage_jax.nn.inception import avg_pool_exclude_pad, bilinear_matrix, max_pool, resize_bilinear


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def manifest():
    return state_dict_from_manifest("fid_inception_v3.json")


@pytest.fixture(scope="module")
def ref():
    z = np.load(fixture("fid_inception_v3.npz"))
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model(manifest):
    return load_inception(manifest[0])


@pytest.fixture(scope="module")
def images(ref):
    # the reference takes [0, 1] images; ours are in [-1, 1]
    return 2.0 * nchw_to_nhwc(ref["images01"]) - 1.0


@pytest.fixture(scope="module")
def features(model, images):
    """The three images' features, computed (and compiled) once for the module."""
    t = time.perf_counter()
    f = model.features(images)
    f = np.asarray(jax.block_until_ready(f))
    print(f"\nFID Inception, 3 images 64->299 px, compile + run: {time.perf_counter() - t:.1f} s")
    return f


# --------------------------------------------------------------------------- parity

def test_meta_cases_are_covered(manifest, ref):
    assert set(manifest[1]["cases"]) == {"out_pool3", "out_frechet_distance"}
    assert set(ref) == {"images01", "out_pool3", "fd_feats_a", "fd_feats_b", "out_frechet_distance"}
    assert ref["images01"].shape == (3, 3, 64, 64)  # resized to 299 inside


def test_parity_pool3_float32(features, ref):
    out = ref["out_pool3"]
    assert features.shape == (3, 2048) and features.dtype == np.float32
    err = assert_close(features, out, "out_pool3 (float32)")
    print(f"pool3 max|ours-ref| = {err:.3g}, std(ref) = {np.std(out):.3g}")
    # the images' features differ by far more than the tolerance (the test can tell them apart)
    assert min(np.max(np.abs(out[i] - out[j])) for i, j in ((0, 1), (0, 2), (1, 2))) > 100 * 1e-4


def test_parity_frechet_distance(ref):
    mu1, s1 = feature_statistics(ref["fd_feats_a"])
    mu2, s2 = feature_statistics(ref["fd_feats_b"])
    d = frechet_distance(mu1, s1, mu2, s2)
    out = float(ref["out_frechet_distance"])
    err = assert_close(np.array(d), np.array(out), "out_frechet_distance")
    print(f"Frechet distance {d!r} vs {out!r}: |diff| = {err:.3g}")
    # float64 throughout: much better than the float32 criterion
    assert abs(d - out) <= 1e-9 * abs(out)


def test_evaluate_reads_pngs_as_pytorch_fids_folder_path(model, features, ref, tmp_path):
    """``evaluate``'s FID input against pytorch-fid's folder path on PNG files: the
    reader gives exactly ``Image.open(p).convert('RGB')``'s uint8 (RGB, RGBA and
    grayscale files), :func:`network_input` equals ``ToTensor`` (u / 255) followed by
    ``2 x - 1`` bit for bit, and the pool3 features of the PNGs through ``evaluate``'s
    path are those of pytorch-fid's input."""
    from PIL import Image

    from sage_jax.data.folders import read_class_folder
    from sage_jax.metrics.fid import network_input

    u8 = np.round(nchw_to_nhwc(ref["images01"]) * 255).astype(np.uint8)  # 3 x 64 x 64, PNG-quantised
    (tmp_path / "a").mkdir()
    Image.fromarray(u8[0]).save(tmp_path / "a" / "0.png")
    Image.fromarray(u8[1]).convert("RGBA").save(tmp_path / "a" / "1.png")
    Image.fromarray(u8[2]).convert("L").save(tmp_path / "a" / "2.png")
    read = read_class_folder(str(tmp_path), 64)
    files = sorted(read.files["a"])
    torch_fid_u8 = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    np.testing.assert_array_equal(read.images["a"], torch_fid_u8)
    to_tensor = torch_fid_u8.astype(np.float32) / np.float32(255.0)   # torchvision ToTensor
    theirs = np.float32(2.0) * to_tensor - np.float32(1.0)           # InceptionV3.normalize_input
    ours = network_input(read.images["a"])
    np.testing.assert_array_equal(ours, theirs)  # u / 127.5 and 2 (u / 255) round alike: doubling is exact
    f_ours = np.asarray(model.features(ours))
    assert_close(f_ours, np.asarray(model.features(theirs)), "pool3, evaluate's path vs pytorch-fid's input")
    # quantising to PNG is visible in the features: the check is not vacuous
    assert np.max(np.abs(f_ours[0] - features[0])) > 1e-4 * np.std(features)


@pytest.mark.heavy
def test_parity_pool3_float64(manifest, images, ref):
    with jax.enable_x64(True):
        m64 = load_inception(manifest[0], dtype=jnp.float64)
        f = m64.features(images)
        assert f.dtype == jnp.float64
        # the fixture holds float32 values: agreement to their rounding
        np.testing.assert_allclose(np.asarray(f), ref["out_pool3"], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- building blocks

def test_bilinear_matrix_matches_pytorch_semantics():
    # F.interpolate([0, 1], size=4, bilinear, align_corners=False) = [0, .25, .75, 1]
    np.testing.assert_allclose(bilinear_matrix(4, 2) @ np.array([0.0, 1.0]), [0, 0.25, 0.75, 1.0], atol=1e-15)
    # 4 -> 2: source coordinates 0.5 and 2.5, plain averages of neighbours (no antialias)
    np.testing.assert_allclose(bilinear_matrix(2, 4) @ np.array([0.0, 1.0, 2.0, 6.0]), [0.5, 4.0], atol=1e-15)
    np.testing.assert_array_equal(bilinear_matrix(7, 7), np.eye(7))
    for o, i in ((299, 64), (299, 512), (5, 3)):
        m = bilinear_matrix(o, i)
        np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
        assert np.all(m >= 0) and np.all((m > 0).sum(1) <= 2)


def test_resize_equals_non_antialiased_linear_resize():
    size_in = (17, 40)  # up in height, down in width
    # jax.image.resize(antialias=False) uses half-pixel centres, as align_corners=False;
    # it is an independent implementation of the same map (edges included)
    # (in float64: in float32 the two round their source coordinates differently, ~2e-6)
    with jax.enable_x64(True):
        x = jax.random.uniform(jax.random.PRNGKey(1), (2, *size_in, 3), jnp.float64)
        out = (29, 31)
        ours = resize_bilinear(x, out)
        theirs = jax.image.resize(x, (2, *out, 3), "linear", antialias=False)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-12)
        # and it is not the antialiased resize when shrinking
        small = resize_bilinear(x, (5, 7))
        aa = jax.image.resize(x, (2, 5, 7, 3), "linear")
        assert float(jnp.max(jnp.abs(small - aa))) > 1e-3


def _brute_pool(x, op, stride, pad, exclude_pad):
    n, h, w, c = x.shape
    oh, ow = (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - pad, j * stride - pad
            rs = slice(max(r0, 0), min(r0 + 3, h))
            cs = slice(max(c0, 0), min(c0 + 3, w))
            win = x[:, rs, cs, :]
            if op == "max":
                out[:, i, j] = win.max(axis=(1, 2))
            else:
                out[:, i, j] = win.sum(axis=(1, 2)) / (win.shape[1] * win.shape[2] if exclude_pad else 9)
    return out


def test_pools_match_brute_force():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 7, 6, 3)))
    np.testing.assert_allclose(np.asarray(avg_pool_exclude_pad(jnp.asarray(x))),
                               _brute_pool(x, "avg", 1, 1, True), atol=1e-6)
    # count_include_pad=True would differ at the border
    assert np.max(np.abs(_brute_pool(x, "avg", 1, 1, False) - _brute_pool(x, "avg", 1, 1, True))) > 1e-3
    np.testing.assert_allclose(np.asarray(max_pool(jnp.asarray(x), 1, padding=1)),
                               _brute_pool(x, "max", 1, 1, False), atol=0)
    np.testing.assert_allclose(np.asarray(max_pool(jnp.asarray(x), 2)), _brute_pool(x, "max", 2, 0, False), atol=0)


# --------------------------------------------------------------------------- converter

def test_every_key_is_used_and_round_trips(manifest, model):
    sd = manifest[0]
    entries = inception_entries()
    used = {k for k, _, _ in entries}
    optional = {k for k in sd if k.endswith(".num_batches_tracked") or k.startswith("fc.")}
    assert used | optional == set(sd) and not used & optional
    assert len(used) == 470 and len(optional) == 96
    back = inception_to_state_dict(model)
    assert set(back) == set(sd) - {"fc.weight", "fc.bias"}
    for k in back:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_optional_keys_may_be_absent(manifest, model):
    sd = {k: v for k, v in manifest[0].items()
          if not (k.endswith(".num_batches_tracked") or k.startswith("fc."))}
    jax.tree_util.tree_map(np.testing.assert_array_equal, convert_inception(sd), model.variables)


@pytest.mark.parametrize("key", ["Mixed_7c.branch_pool.conv.weight", "Conv2d_1a_3x3.bn.running_var",
                                 "Mixed_6e.branch7x7dbl_5.bn.bias"])
def test_missing_key_raises(manifest, key):
    broken = {k: v for k, v in manifest[0].items() if k != key}
    with pytest.raises(CheckpointError, match=re.escape(key)):
        convert_inception(broken)


@pytest.mark.parametrize("key", ["AuxLogits.fc.weight", "Mixed_8a.branch1x1.conv.weight", "extra_key"])
def test_extra_key_raises(manifest, key):
    with pytest.raises(CheckpointError, match=re.escape(key)):
        convert_inception({**manifest[0], key: np.zeros((2, 2), np.float32)})


@pytest.mark.parametrize("key,shape", [("Conv2d_1a_3x3.conv.weight", (32, 3, 5, 5)),
                                       ("Mixed_6b.branch7x7_2.conv.weight", (128, 128, 7, 1)),  # 1x7 vs 7x1
                                       ("Mixed_5b.branch_pool.bn.running_mean", (33,)),
                                       ("fc.weight", (1000, 2048))])
def test_misshaped_key_raises(manifest, key, shape):
    wrong = dict(manifest[0])
    wrong[key] = np.zeros(shape, np.float32)
    with pytest.raises(CheckpointError, match=re.escape(key)):
        convert_inception(wrong)


def test_load_from_pth_path(manifest, model, tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    path.write_bytes(torch_pickle.dumps(manifest[0], "zip", name="pt_inception-2015-12-05-6726825d"))
    m = load_inception(str(path))
    jax.tree_util.tree_map(np.testing.assert_array_equal, m.variables, model.variables)
    assert m.fingerprint == model.fingerprint
    with pytest.raises(CheckpointError):
        load_inception(str(tmp_path / "missing.pth"))


def test_fingerprint_depends_on_weights(manifest, model):
    sd = dict(manifest[0])
    sd["Mixed_7c.branch_pool.bn.bias"] = sd["Mixed_7c.branch_pool.bn.bias"] + np.float32(1e-3)
    other = load_inception(sd)
    assert other.fingerprint != model.fingerprint
    assert model.fingerprint == load_inception(manifest[0]).fingerprint


# --------------------------------------------------------------------------- Frechet distance

def _rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_feature_statistics_match_numpy():
    f = np.random.default_rng(3).normal(size=(40, 7)).astype(np.float32)
    mu, sigma = feature_statistics(f)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError):
        feature_statistics(f[:1])


@pytest.mark.parametrize("rotate", [False, True])
def test_frechet_distance_closed_form(rotate):
    # N(m1, diag(a)) vs N(m2, diag(b)): |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2, also
    # after rotating both covariances by the same orthogonal matrix (they commute)
    rng = np.random.default_rng(4)
    d = 12
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    s1, s2 = np.diag(a), np.diag(b)
    if rotate:
        q = _rotation(d, 5)
        s1, s2 = q @ s1 @ q.T, q @ s2 @ q.T
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_identical_and_symmetric():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    y = rng.normal(size=(150, 16)) * 1.5 + 0.2
    mx, sx = feature_statistics(x)
    my, sy = feature_statistics(y)
    assert abs(frechet_distance(mx, sx, mx, sx)) <= 1e-10 * np.trace(sx)
    dxy, dyx = frechet_distance(mx, sx, my, sy), frechet_distance(my, sy, mx, sx)
    assert dxy > 1.0
    assert dxy == pytest.approx(dyx, rel=1e-12)


def test_frechet_distance_rank_deficient():
    # fewer samples than dimensions (like 128 images vs 2048 features): singular covariances
    rng = np.random.default_rng(7)
    d = 128
    x = rng.normal(size=(40, d))
    y = rng.normal(size=(30, d)) * 1.2
    mx, sx = feature_statistics(x)
    my, sy = feature_statistics(y)
    assert np.linalg.matrix_rank(sx) == 39 and np.linalg.matrix_rank(sy) == 29
    dxy, dyx = frechet_distance(mx, sx, my, sy), frechet_distance(my, sy, mx, sx)
    assert np.isfinite(dxy) and dxy > 0
    assert dxy == pytest.approx(dyx, rel=1e-10)
    assert abs(frechet_distance(mx, sx, mx, sx)) <= 1e-10 * np.trace(sx)
    # a subset of the same sample: still non-negative
    ms, ss = feature_statistics(x[:20])
    assert frechet_distance(mx, sx, ms, ss) >= 0
    # the trace term equals the nuclear norm of the centred cross product
    xc, yc = x - mx, y - my
    nuc = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(39 * 29)
    assert trace_sqrt_product(sx, sy) == pytest.approx(nuc, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(8)
    d = 20
    # full rank, non-commuting covariances
    x = rng.normal(size=(300, d)) @ rng.normal(size=(d, d))
    y = rng.normal(size=(250, d)) @ rng.normal(size=(d, d)) + 0.5
    mx, sx = feature_statistics(x)
    my, sy = feature_statistics(y)
    assert np.max(np.abs(sx @ sy - sy @ sx)) > 1.0
    covmean = linalg.sqrtm(sx @ sy).real
    expected = np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2 * np.trace(covmean)
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(expected, rel=1e-9)
    # pytorch-fid's eps fallback: sqrtm((s1 + eps I)(s2 + eps I)), traces unchanged
    eps = 1e-2
    covmean = linalg.sqrtm((sx + eps * np.eye(d)) @ (sy + eps * np.eye(d))).real
    expected = np.sum((mx - my) ** 2) + np.trace(sx) + np.trace(sy) - 2 * np.trace(covmean)
    assert frechet_distance(mx, sx, my, sy, eps=eps) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(2), np.array([[np.nan, 0], [0, 1]]), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- KID

def _mmd_unbiased(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_full_sets_equal_the_unbiased_mmd():
    # one subset of all rows: the subset is a permutation, so the value is the MMD_u
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 0.3
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=30, key=jax.random.PRNGKey(0))
    assert mean == pytest.approx(_mmd_unbiased(x, y), rel=1e-12)
    assert std == 0.0


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(10)
    d = 32
    x = rng.normal(size=(400, d))
    y = rng.normal(size=(400, d))
    z = rng.normal(size=(400, d)) + 0.5
    key = jax.random.PRNGKey(3)
    same, same_std = kernel_inception_distance(x, y, num_subsets=20, subset_size=100, key=key)
    shifted, shifted_std = kernel_inception_distance(x, z, num_subsets=20, subset_size=100, key=key)
    assert abs(same) < 0.02 and same_std > 0
    assert shifted > 0.2
    assert shifted > 10 * (abs(same) + same_std)


def test_kid_is_deterministic_per_key():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(120, 8)), rng.normal(size=(100, 8)) + 0.2
    kw = dict(num_subsets=5, subset_size=50)
    a = kernel_inception_distance(x, y, key=jax.random.PRNGKey(7), **kw)
    b = kernel_inception_distance(x, y, key=jax.random.PRNGKey(7), **kw)
    c = kernel_inception_distance(x, y, key=jax.random.PRNGKey(8), **kw)
    assert a == b and a != c
    g1 = kernel_inception_distance(x, y, key=np.random.default_rng(1), **kw)
    g2 = kernel_inception_distance(x, y, key=np.random.default_rng(1), **kw)
    assert g1 == g2
    # new-style typed keys work too
    t1 = kernel_inception_distance(x, y, key=jax.random.key(7), **kw)
    assert t1 == kernel_inception_distance(x, y, key=jax.random.key(7), **kw)
    with pytest.raises(TypeError):
        kernel_inception_distance(x, y, key=1, **kw)


# --------------------------------------------------------------------------- feature extraction

def test_extract_features_pads_to_one_shape():
    rng = np.random.default_rng(12)
    imgs = rng.uniform(-1, 1, size=(23, 4, 5, 3))
    w = rng.normal(size=(4 * 5 * 3, 6))
    shapes = []

    def fn(b):
        shapes.append(b.shape)
        return b.reshape(len(b), -1) @ w

    direct = imgs.reshape(23, -1) @ w
    out = extract_features(fn, imgs, batch_size=8, progress=False)
    np.testing.assert_allclose(out, direct, rtol=1e-12)
    assert set(shapes) == {(8, 4, 5, 3)} and len(shapes) == 3
    # an iterable of uneven batches is re-chunked to the same shape
    shapes.clear()
    batches = [imgs[:5], imgs[5:6], imgs[6:20], imgs[20:]]
    out = extract_features(fn, iter(batches), batch_size=8, progress=False)
    np.testing.assert_allclose(out, direct, rtol=1e-12)
    assert set(shapes) == {(8, 4, 5, 3)} and len(shapes) == 3
    # fewer images than a batch: one call of that size
    shapes.clear()
    out = extract_features(fn, imgs[:3], batch_size=8, progress=False)
    assert shapes == [(3, 4, 5, 3)]
    np.testing.assert_allclose(out, direct[:3], rtol=1e-12)


def test_extract_features_with_inception(model, images, features):
    # uneven batches re-chunked to the already compiled batch of 3
    out = extract_features(model.features, [images[:1], images[1:]], batch_size=3, progress=False)
    assert out.shape == (3, 2048)
    np.testing.assert_array_equal(out, features)


# --------------------------------------------------------------------------- cache

def test_cached_statistics_hit_and_invalidation(tmp_path):
    files = []
    for i in range(3):
        p = tmp_path / "data" / f"img{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([i]) * 10)
        files.append(str(p))
    rng = np.random.default_rng(13)
    feats = rng.normal(size=(20, 5))
    calls = []

    def compute():
        calls.append(1)
        return feats + len(calls)  # a recomputation gives other numbers

    cache = tmp_path / "cache"
    key = {"name": "real set", "files": files, "network": "net-A", "size": 64}
    s1 = cached_statistics(cache, key, compute)
    assert len(calls) == 1 and isinstance(s1, Statistics) and s1.n == 20
    mu, sigma = feature_statistics(feats + 1)
    np.testing.assert_array_equal(s1.mu, mu)
    np.testing.assert_array_equal(s1.sigma, sigma)
    written = sorted(os.listdir(cache))
    assert len(written) == 1 and written[0].endswith(".npz")  # no temporary file left

    s2 = cached_statistics(cache, dict(key), compute)  # hit
    assert len(calls) == 1
    np.testing.assert_array_equal(s2.mu, s1.mu)
    np.testing.assert_array_equal(s2.sigma, s1.sigma)

    # a file changes (size and mtime): stale, recomputed and overwritten in place
    with open(files[1], "ab") as f:
        f.write(b"more")
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    s3 = cached_statistics(cache, key, compute)
    assert len(calls) == 2
    np.testing.assert_allclose(s3.mu, s1.mu + 1)
    assert sorted(os.listdir(cache)) == written
    cached_statistics(cache, key, compute)
    assert len(calls) == 2

    # only the mtime changes: also stale
    st = os.stat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    cached_statistics(cache, key, compute)
    assert len(calls) == 3

    # another feature network: stale
    cached_statistics(cache, {**key, "network": "net-B"}, compute)
    assert len(calls) == 4

    # a corrupt cache file is recomputed
    assert len(os.listdir(cache)) == 2  # one file per network
    (cache / written[0]).write_bytes(b"not an npz")
    cached_statistics(cache, key, compute)
    assert len(calls) == 5
    cached_statistics(cache, key, compute)
    assert len(calls) == 5

    with pytest.raises(ValueError, match="network"):
        cached_statistics(cache, {"files": files}, compute)


# --------------------------------------------------------------------------- fid / kid as dicts

def test_fid_and_kid_dicts(ref):
    """``fid`` and ``kid`` (what ``sage-jax evaluate`` and the class-wise evaluation call):
    the fixture's Frechet distance from features, the same from cached statistics or a
    ``(mu, sigma)`` pair, and KID's mean and spread over subsets."""
    a, b = ref["fd_feats_a"], ref["fd_feats_b"]
    out = fid(a, b)
    assert set(out) == {"fid"}
    assert out["fid"] == pytest.approx(float(ref["out_frechet_distance"]), rel=1e-9)
    mu, sigma = feature_statistics(a)
    assert fid(Statistics(mu, sigma, len(a)), b)["fid"] == pytest.approx(out["fid"], rel=1e-12)
    assert fid((mu, sigma), b)["fid"] == pytest.approx(out["fid"], rel=1e-12)
    assert fid(b, a)["fid"] == pytest.approx(out["fid"], rel=1e-9)   # symmetric
    k = kid(a, b, key=jax.random.PRNGKey(0), num_subsets=3, subset_size=50)
    assert set(k) == {"kid", "kid_std"} and k["kid"] > 0
    mean, std = kernel_inception_distance(a, b, key=jax.random.PRNGKey(0), num_subsets=3, subset_size=50)
    assert (k["kid"], k["kid_std"]) == (mean, std)
    with pytest.raises(TypeError):   # KID needs its subsets' key
        kid(a, b)
