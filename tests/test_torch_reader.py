"""The torch-free .pt reader on the reference's own files, and on hostile/broken ones."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import torch_pickle
from fixture_utils import fixture
from sage_jax import checkpoints
from sage_jax.checkpoints import CheckpointError, read_torch, read_torch_bytes


def _assert_same_tree(a, b, path="root"):
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_same_tree(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b), path
    else:
        assert a == b, path


def test_zip_and_legacy_formats_read_to_identical_trees():
    new = read_torch(fixture("tiny_rosinality_ckpt.pt"))
    old = read_torch(fixture("tiny_rosinality_ckpt_legacy.pt"))
    _assert_same_tree(new, old)
    assert set(new) == {"g", "d", "g_ema", "g_optim", "d_optim", "args"}
    # argparse.Namespace becomes a plain dict
    assert isinstance(new["args"], dict) and new["args"]["size"] == 32
    assert new["g_ema"]["style.1.weight"].dtype == np.float32
    assert new["g_ema"]["convs.0.conv.weight"].shape == (1, 32, 32, 3, 3)
    # optimizer state: tensors, ints and tuples survive
    group = new["g_optim"]["param_groups"][0]
    assert group["betas"] == (0.0, 0.99) and isinstance(group["params"], list)


def test_age_layout_splits_into_parts_with_dtypes_kept():
    ckpt = read_torch(fixture("tiny_age_layout_ckpt.pt"))
    expected = np.load(fixture("tiny_checkpoints_expected.npz"))
    parts = checkpoints.split_state_dict(ckpt["state_dict"])
    assert set(parts) == {"encoder", "decoder", "ax"}
    assert parts["encoder"]["styles.0.linear.bias"].dtype == np.float16
    assert parts["encoder"]["styles.0.linear.weight"].dtype == np.float32
    np.testing.assert_array_equal(parts["ax"]["A"], expected["age_ax_A"])
    np.testing.assert_array_equal(ckpt["latent_avg"], expected["age_latent_avg"])
    assert ckpt["opts"]["A_length"] == 8 and ckpt["opts"]["output_size"] == 32
    g_ema = read_torch(fixture("tiny_rosinality_ckpt.pt"))["g_ema"]
    assert set(parts["decoder"]) == set(g_ema)


def test_split_state_dict_rejects_unknown_prefix():
    with pytest.raises(CheckpointError, match="mystery.weight"):
        checkpoints.split_state_dict({"decoder.x": np.zeros(1), "mystery.weight": np.zeros(1)})


# --------------------------------------------------------------------- hostile files
class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _zip_pt(payload: bytes, name="archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/data.pkl", payload)
        zf.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def _legacy_pt(payload: bytes) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in
                    (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}))
    return head + payload + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_reduce_is_refused_and_nothing_runs(tmp_path, fmt, protocol):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _Evil(f"touch {sentinel}")}, protocol=protocol)
    # sanity: unpickling this payload with the standard unpickler WOULD run the command
    data = _zip_pt(payload) if fmt == "zip" else _legacy_pt(payload)
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        read_torch(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "system" in msg and "refused" in msg
    assert not sentinel.exists()


def test_the_malicious_payload_is_live(tmp_path):
    # Shows the payload used above really executes under plain pickle, so the refusal
    # test above would fail if the reader used pickle.load.
    sentinel = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Evil(f"touch {sentinel}"), protocol=2))
    assert sentinel.exists()


def test_other_disallowed_global_is_named():
    payload = pickle.dumps({"x": print}, protocol=2)
    with pytest.raises(CheckpointError, match=r"builtins\.print"):
        read_torch_bytes(_zip_pt(payload), "f.pt")


@pytest.mark.parametrize("name", ["tiny_rosinality_ckpt.pt", "tiny_rosinality_ckpt_legacy.pt"])
def test_truncated_files_are_errors_naming_the_file(tmp_path, name):
    data = open(fixture(name), "rb").read()
    for cut in (10, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            read_torch(path)
        assert str(path) in str(err.value)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        read_torch(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_torch(junk)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_written_tensors_round_trip(fmt):
    tree = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": [np.ones(2, np.float16), 3, "x"],
            "c": (np.array([1, 2], np.int64),)}
    out = read_torch_bytes(torch_pickle.dumps(tree, fmt), "t.pt")
    _assert_same_tree(out, tree)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_storage_larger_than_file_is_refused(fmt):
    data = torch_pickle.dumps({"w": np.zeros(4, np.float32)}, fmt, numel_override={"0": 10**12})
    with pytest.raises(CheckpointError, match="declares"):
        read_torch_bytes(data, "big.pt")
