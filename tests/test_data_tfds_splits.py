"""TFDS folder / Flowers 102 builders (no TensorFlow) and the seen/unseen/shot splits."""

import io
import json
import os
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from sage_jax.data import splits as sp
from sage_jax.data import tfds_data as td
from sage_jax.data.folders import FolderDataset, scan_folder

SIZE = 16


def _rgb(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array_or_image, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    img.save(path, **kw)


def _expected(path, size=SIZE):
    """Independent of sage_jax: PIL RGB conversion + bilinear resize."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))


@pytest.fixture()
def small_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    shapes = [(20, 30), (40, 40), (16, 16)]
    for c in ["zebra", "cat", "dog"]:
        for i, (h, w) in enumerate(shapes):
            _save(str(root / c / f"{i}.png"), _rgb(rng, h, w))
    return str(root)


def test_folder_build_and_read_round_trip(small_folder, tmp_path):
    data_dir = str(tmp_path / "tfds")
    builder = td.build_folder_dataset(small_folder, data_dir, "tiny_folder", SIZE)
    assert os.path.isdir(os.path.join(data_dir, "tiny_folder", td.VERSION))
    assert builder.info.metadata["num_skipped"] == 0

    sources, names = td.open_folder_dataset(data_dir, "tiny_folder")
    assert names == ["cat", "dog", "zebra"]
    assert list(sources) == ["train"]
    src = sources["train"]
    paths, labels, scan_names = scan_folder(small_folder)
    assert scan_names == names and len(src) == len(paths) == 9
    for i, (path, label) in enumerate(zip(paths, labels)):  # source order is kept
        rec = src[i]
        assert rec["file_name"].decode() == os.path.relpath(path, small_folder)
        assert int(rec["label"]) == label
        assert rec["image"].dtype == np.uint8 and rec["image"].shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(rec["image"], _expected(path))

    # Float batches equal FolderDataset's.
    images, labs = td.read_batch(src, range(9))
    ref_images, ref_labels = FolderDataset.from_folder(small_folder, SIZE).load_batch(range(9))
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(labs, ref_labels)
    assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def test_rebuild_reuses_refuses_or_overwrites(small_folder, tmp_path):
    data_dir = str(tmp_path / "tfds")
    td.build_folder_dataset(small_folder, data_dir, "tiny_folder", SIZE)
    again = td.build_folder_dataset(small_folder, data_dir, "tiny_folder", SIZE)
    assert again.info.splits["train"].num_examples == 9
    with pytest.raises(ValueError, match="overwrite=True"):
        td.build_folder_dataset(small_folder, data_dir, "tiny_folder", 8)
    td.build_folder_dataset(small_folder, data_dir, "tiny_folder", 8, overwrite=True)
    sources, _ = td.open_folder_dataset(data_dir, "tiny_folder")
    assert sources["train"][0]["image"].shape == (8, 8, 3)
    with pytest.raises(ValueError, match="snake_case"):
        td.build_folder_dataset(small_folder, data_dir, "Bad-Name", SIZE)
    with pytest.raises(FileNotFoundError, match="no built dataset"):
        td.open_folder_dataset(data_dir, "missing")


def test_split_folders_layout(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "af"
    for split, classes in (("train", ["a", "b"]), ("valid", ["b", "c"])):
        for c in classes:
            for i in range(2):
                _save(str(root / split / f"{c}_{i}.png"), _rgb(rng, 12, 12))
    td.build_folder_dataset(str(root), str(tmp_path / "tfds"), "af_layout", SIZE)
    sources, names = td.open_folder_dataset(str(tmp_path / "tfds"), "af_layout")
    assert names == ["a", "b", "c"] and set(sources) == {"train", "valid"}
    valid = [(r["file_name"].decode(), int(r["label"])) for r in sources["valid"]]
    assert valid == [("b_0.png", 1), ("b_1.png", 1), ("c_0.png", 2), ("c_1.png", 2)]


def test_bad_files_are_converted_or_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "bad"
    good = _rgb(rng, 24, 24)
    _save(str(root / "a" / "good.png"), good)
    _save(str(root / "a" / "gray.png"), rng.integers(0, 256, (24, 24), dtype=np.uint8))
    _save(str(root / "a" / "rgba.png"), rng.integers(0, 256, (24, 24, 4), dtype=np.uint8))
    _save(str(root / "a" / "palette.png"), Image.fromarray(good).convert("P"))
    _save(str(root / "b" / "deep16.png"), (np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100))
    _save(str(root / "b" / "ok.jpg"), _rgb(rng, 32, 32), quality=90)
    buf = io.BytesIO()
    Image.fromarray(_rgb(rng, 64, 64)).save(buf, "JPEG", quality=90)
    (root / "b" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _save(str(root / "b" / "tiny.png"), _rgb(rng, 2, 2))
    (root / "b" / "text.jpg").write_text("not an image")
    (root / "b" / "empty.png").write_bytes(b"")

    builder = td.build_folder_dataset(str(root), str(tmp_path / "tfds"), "bad_files", SIZE)
    meta = builder.info.metadata
    assert meta["num_skipped"] == 4
    assert sorted(f for f, _ in meta["skipped"]["train"]) == [
        "b/empty.png", "b/text.jpg", "b/tiny.png", "b/truncated.jpg"]
    assert any("min_side" in reason for _, reason in meta["skipped"]["train"])
    assert meta["converted"] == {"L": 1, "RGBA": 1, "P": 1, "I;16": 1}

    sources, names = td.open_folder_dataset(str(tmp_path / "tfds"), "bad_files")
    recs = {r["file_name"].decode(): r for r in sources["train"]}
    assert sorted(recs) == ["a/good.png", "a/gray.png", "a/palette.png", "a/rgba.png", "b/deep16.png", "b/ok.jpg"]
    gray = recs["a/gray.png"]["image"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    for f in ("a/good.png", "a/rgba.png", "a/palette.png", "b/ok.jpg"):
        np.testing.assert_array_equal(recs[f]["image"], _expected(str(root / f)))
    # 16-bit: rescaled to 8 bits (not clipped): the brightest pixel maps near 255 * max/65535.
    deep = recs["b/deep16.png"]["image"].astype(int)
    assert deep.max() > 100 and deep.min() < 10
    # The counts are stored with the dataset.
    reopened = td.tfds.builder_from_directory(os.path.join(str(tmp_path / "tfds"), "bad_files", td.VERSION))
    assert reopened.info.metadata["num_skipped"] == 4


def test_split_with_only_bad_files_is_an_error(tmp_path):
    root = tmp_path / "allbad"
    os.makedirs(root / "a")
    (root / "a" / "x.png").write_text("nope")
    with pytest.raises(ValueError, match="no readable image"):
        td.build_folder_dataset(str(root), str(tmp_path / "tfds"), "all_bad", SIZE)
    assert not os.path.exists(tmp_path / "tfds" / "all_bad" / td.VERSION)


# ----------------------------------------------------------------------------- flowers

_FLOWER_LABELS = [1, 1, 2, 102, 2, 1]  # images 1..6, 1-based labels as in imagelabels.mat
_FLOWER_SETID = {"trnid": [4, 1], "valid": [2, 6], "tstid": [3, 5]}  # image 6 missing from the archive


def _fake_flowers(manual, extracted=False):
    import scipy.io

    rng = np.random.default_rng(3)
    os.makedirs(manual, exist_ok=True)
    jpgs = {}
    for i in range(1, 6):
        buf = io.BytesIO()
        Image.fromarray(_rgb(rng, 20 + i, 30)).save(buf, "JPEG", quality=90)
        jpgs[f"image_{i:05d}.jpg"] = buf.getvalue()
    if extracted:
        for n, b in jpgs.items():
            os.makedirs(os.path.join(manual, "jpg"), exist_ok=True)
            with open(os.path.join(manual, "jpg", n), "wb") as f:
                f.write(b)
    else:
        with tarfile.open(os.path.join(manual, "102flowers.tgz"), "w:gz") as tar:
            for n, b in list(jpgs.items()) + [("README.txt", b"x"), ("../evil.jpg", b"x")]:
                info = tarfile.TarInfo(n if n.startswith("..") or n.endswith(".txt") else f"jpg/{n}")
                info.size = len(b)
                tar.addfile(info, io.BytesIO(b))
    scipy.io.savemat(os.path.join(manual, "imagelabels.mat"), {"labels": np.array([_FLOWER_LABELS])})
    scipy.io.savemat(os.path.join(manual, "setid.mat"), {k: np.array([v]) for k, v in _FLOWER_SETID.items()})
    return jpgs


@pytest.mark.parametrize("extracted", [False, True])
def test_flowers102_from_manual_dir(tmp_path, extracted):
    manual = str(tmp_path / "manual")
    jpgs = _fake_flowers(manual, extracted)
    data_dir = str(tmp_path / "tfds")
    builder = td.build_flowers102(manual, data_dir, SIZE)
    assert builder.info.metadata["num_skipped"] == 1
    assert builder.info.metadata["skipped"]["validation"][0][0] == "image_00006.jpg"
    assert [e for e in os.listdir(data_dir) if e.startswith(".flowers102")] == []  # scratch removed
    assert not os.path.exists(tmp_path / "evil.jpg")

    sources, names = td.open_folder_dataset(data_dir, "oxford_flowers102_raw")
    assert len(names) == 102 and names[0] == "pink primrose" and names[101] == "blackberry lily"
    got = {s: [(r["file_name"].decode(), int(r["label"])) for r in src] for s, src in sources.items()}
    assert got == {"train": [("image_00001.jpg", 0), ("image_00004.jpg", 101)],
                   "validation": [("image_00002.jpg", 0)],
                   "test": [("image_00003.jpg", 1), ("image_00005.jpg", 1)]}
    rec = sources["test"][1]
    np.testing.assert_array_equal(rec["image"], _expected(io.BytesIO(jpgs["image_00005.jpg"])))
    assert len(builder.as_data_source(split="train+validation+test")) == 5
    assert "tensorflow" not in sys.modules


def test_flowers102_bad_annotations(tmp_path):
    import scipy.io

    manual = str(tmp_path / "manual")
    _fake_flowers(manual)
    scipy.io.savemat(os.path.join(manual, "imagelabels.mat"), {"labels": np.array([[1, 103, 2, 2, 2, 2]])})
    with pytest.raises(ValueError, match="1..102"):
        td.build_flowers102(manual, str(tmp_path / "tfds"), SIZE)
    os.remove(os.path.join(manual, "setid.mat"))
    with pytest.raises(FileNotFoundError, match="setid.mat"):
        td.read_flowers102_annotations(manual)


def test_official_flowers_builder_needs_tensorflow(tmp_path):
    """Why tfds_data has its own Flowers builder (module docstring): TFDS's reads the
    .mat files through tf.io.gfile. When this fails, prefer the official builder."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorFlow is installed")
    manual = str(tmp_path / "manual")
    _fake_flowers(manual, extracted=True)
    official = td.tfds.builder("oxford_flowers102", data_dir=str(tmp_path / "tfds_official"))
    gen = official._generate_examples(os.path.join(manual, "jpg"), os.path.join(manual, "imagelabels.mat"),
                                      os.path.join(manual, "setid.mat"), "trnid")
    with pytest.raises(ModuleNotFoundError, match="tensorflow"):
        next(iter(gen))


# ------------------------------------------------------------------------------ splits

def _names(n):
    return [f"class{i:04d}" for i in range(n)]


def test_paper_split_counts():
    assert sp.PAPER_SPLITS == {"animal_faces": (119, 30), "flowers": (85, 17),
                               "vggfaces": (1802, 572), "nabirds": (444, 111)}
    for dataset, (n_seen, n_unseen) in sp.PAPER_SPLITS.items():
        names = _names(n_seen + n_unseen)
        shuffled = list(np.random.default_rng(5).permutation(names))
        seen, unseen = sp.seen_unseen_split(shuffled, dataset=dataset)
        assert (len(seen), len(unseen)) == (n_seen, n_unseen)
        assert seen == names[:n_seen] and unseen == names[n_seen:]  # sorted: by class index


def test_paper_split_errors():
    with pytest.raises(ValueError, match="Animal Faces has 149 classes, got 150"):
        sp.seen_unseen_split(_names(150), dataset="animal_faces")
    with pytest.raises(ValueError, match="Flowers has 102 classes, got 101"):
        sp.seen_unseen_split(_names(101), dataset="Flowers")
    with pytest.raises(ValueError, match="unknown dataset"):
        sp.seen_unseen_split(_names(10), dataset="cifar")
    with pytest.raises(ValueError, match="contradicts"):
        sp.seen_unseen_split(_names(149), dataset="animal_faces", n_seen=100)
    with pytest.raises(ValueError, match="there are 10 classes"):
        sp.seen_unseen_split(_names(10), n_seen=6, n_unseen=5)
    with pytest.raises(ValueError, match="n_seen"):
        sp.seen_unseen_split(_names(10))
    with pytest.raises(ValueError, match="at least one"):
        sp.seen_unseen_split(_names(10), n_seen=10)
    with pytest.raises(ValueError, match="not unique"):
        sp.seen_unseen_split(["a", "a", "b"], n_seen=1)
    with pytest.raises(ValueError, match="order"):
        sp.seen_unseen_split(_names(10), n_seen=5, order="shuffled")
    with pytest.raises(ValueError, match="seed"):
        sp.seen_unseen_split(_names(10), n_seen=5, order="random", seed=-1)


def test_random_and_given_class_split():
    names = _names(149)
    a = sp.seen_unseen_split(names, dataset="animal_faces", order="random", seed=7)
    b = sp.seen_unseen_split(list(reversed(names)), dataset="animal_faces", order="random", seed=7)
    c = sp.seen_unseen_split(names, dataset="animal_faces", order="random", seed=8)
    assert a == b  # deterministic, independent of the input order
    assert a != c and a != sp.seen_unseen_split(names, dataset="animal_faces")
    seen, unseen = a
    assert len(seen) == 119 and len(unseen) == 30 and sorted(seen + unseen) == names
    assert seen == sorted(seen) and unseen == sorted(unseen)
    state = np.random.get_state()[1].copy()
    sp.seen_unseen_split(names, n_unseen=30, order="random", seed=7)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global RNG untouched
    given = ["z", "y", "x", "w"]
    assert sp.seen_unseen_split(given, n_seen=3, order="given") == (["z", "y", "x"], ["w"])
    assert sp.seen_unseen_split(given, n_unseen=1) == (["w", "x", "y"], ["z"])


def test_shot_split_deterministic_and_complete():
    by_class = {f"c{j}": [f"c{j}/img{i:02d}.jpg" for i in range(10)] for j in range(6)}
    sample, real = sp.shot_split(by_class, k_sample=3, seed=0)
    for c, items in by_class.items():
        assert len(sample[c]) == 3 and len(real[c]) == 7
        assert sorted(sample[c] + real[c]) == sorted(items)
    # Same seed: same split, whatever the listing order and the other classes present.
    shuffled = {c: list(reversed(v)) for c, v in reversed(list(by_class.items()))}
    assert sp.shot_split(shuffled, 3, seed=0) == (sample, real)
    alone = sp.shot_split({"c2": by_class["c2"]}, 3, seed=0)
    assert alone == ({"c2": sample["c2"]}, {"c2": real["c2"]})
    other, _ = sp.shot_split(by_class, 3, seed=1)
    assert other != sample
    # Not always the first images, nor the same positions in every class.
    assert any(sample[c] != sorted(by_class[c])[:3] for c in by_class)
    positions = {tuple(sorted(by_class[c]).index(x) for x in sample[c]) for c in by_class}
    assert len(positions) > 1


def test_shot_split_errors():
    with pytest.raises(ValueError, match=r"class 'small' has 3 images; k_sample=3 needs at least 4"):
        sp.shot_split({"big": list(range(10)), "small": [1, 2, 3]}, 3)
    with pytest.raises(ValueError, match="k_sample"):
        sp.shot_split({"a": [1, 2]}, 0)
    with pytest.raises(ValueError, match="more than once"):
        sp.shot_split({"a": ["x", "x", "y"]}, 1)


def test_split_json_round_trip(tmp_path):
    seen, unseen = sp.seen_unseen_split(_names(20), n_unseen=4, order="random", seed=3)
    by_class = {c: [f"{c}/{i}.png" for i in range(5)] for c in unseen}
    sample, real = sp.shot_split(by_class, 2, seed=3)
    split = sp.Split(seen, unseen, sample, real, meta={"seed": 3, "k_sample": 2})
    path = str(tmp_path / "sub" / "split.json")
    sp.save_split(path, split)
    loaded = sp.load_split(path)
    assert loaded == split
    assert json.load(open(path))["format"] == sp.SPLIT_FORMAT
    assert os.listdir(tmp_path / "sub") == ["split.json"]  # no temporary left

    bad = split.to_json() | {"format": "other"}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="not a sage_jax.split"):
        sp.load_split(str(tmp_path / "bad.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        sp.load_split(str(tmp_path / "broken.json"))
    with pytest.raises(ValueError, match="both seen and unseen"):
        sp.Split(["a", "b"], ["b"])
    with pytest.raises(ValueError, match="S_sample and S_real"):
        sp.Split(["a"], ["b"], {"b": ["x"]}, {"b": ["x", "y"]})
