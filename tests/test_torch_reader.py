"""The torch-free .pt reader on the reference's own files, and on hostile/broken ones."""

import io
import os
import pickle
import re
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


class _Call:
    """Pickles as "call fn(*args)"; fn may itself be a _Call (a nested lookup)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __call__(self, *a):  # the pickler wants a callable in a reduce tuple
        raise AssertionError

    def __reduce__(self):
        return (self.fn, self.args)


def _payloads(marker):
    """name -> (object whose unpickling would create ``marker``, text the refusal names)."""
    import builtins
    import copyreg
    import importlib
    import subprocess

    py = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (_Evil(f"touch {marker}"), "system"),
        "eval": (_Call(builtins.eval, py), "builtins.eval"),
        "exec": (_Call(builtins.exec, py), "builtins.exec"),
        "subprocess.Popen": (_Call(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        # getattr(importlib.import_module('os'), 'system')('touch marker'): nested lookups
        "importlib": (_Call(_Call(getattr, _Call(importlib.import_module, "os"), "system"), f"touch {marker}"),
                      "refused"),
        # copyreg._reconstructor(Popen, Popen, argv) runs Popen.__init__(obj, argv)
        "copyreg": (_Call(copyreg._reconstructor, subprocess.Popen, subprocess.Popen, ["touch", str(marker)]),
                    "copyreg._reconstructor"),
    }


PAYLOADS = list(_payloads("x"))


def _wait_for(path, seconds=5.0):
    import time

    end = time.time() + seconds
    while not path.exists() and time.time() < end:
        time.sleep(0.02)
    return path.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_each_malicious_payload_is_live(tmp_path, kind):
    # Each payload really executes under plain pickle, so the refusal tests below would
    # fail (the marker would appear) if the reader ran what a file asks for.
    marker = tmp_path / "ran"
    obj, _ = _payloads(marker)[kind]
    out = pickle.loads(pickle.dumps({"state_dict": obj}, protocol=2))
    if hasattr(out["state_dict"], "wait"):
        out["state_dict"].wait()
    assert _wait_for(marker)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("kind", PAYLOADS)
def test_malicious_reduce_is_refused_and_nothing_runs(tmp_path, fmt, protocol, kind):
    marker = tmp_path / "pwned"
    obj, named = _payloads(marker)[kind]
    payload = pickle.dumps({"state_dict": obj}, protocol=protocol)
    data = _zip_pt(payload) if fmt == "zip" else _legacy_pt(payload)
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        read_torch(path)
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg and named in msg
    assert not _wait_for(marker, 0.02)


def test_extension_registry_opcodes_are_refused(tmp_path):
    import copyreg

    marker = tmp_path / "pwned"
    copyreg.add_extension(os.system.__module__, "system", 0x7FF1)
    try:
        payload = pickle.dumps(_Evil(f"touch {marker}"), protocol=2)
        assert b"\x82" in payload or b"\x83" in payload  # EXT1 / EXT2: no module name in the file
        with pytest.raises(CheckpointError, match="EXT"):
            read_torch_bytes(_zip_pt(payload), "ext.pt")
        assert not marker.exists()
        pickle.loads(payload)  # the same bytes run the command under plain pickle
        assert marker.exists()
    finally:
        copyreg.remove_extension(os.system.__module__, "system", 0x7FF1)


def _proto4(*ops: bytes) -> bytes:
    return b"\x80\x04" + b"".join(ops) + b"."


def _u(text: str) -> bytes:  # SHORT_BINUNICODE
    b = text.encode()
    return b"\x8c" + bytes([len(b)]) + b


@pytest.mark.parametrize("module,name", [
    ("torch._utils", "_rebuild_tensor_v2.__globals__"),
    ("collections", "OrderedDict.__init__.__globals__"),
    ("builtins", "getattr"),
    ("builtins", "__import__"),
    ("os", "system"),
    ("torch", "load"),
    ("numpy", "load"),
])
def test_dotted_and_nested_global_lookups_are_refused(module, name):
    data = _proto4(_u(module), _u(name), b"\x93")  # STACK_GLOBAL
    with pytest.raises(CheckpointError, match=re.escape(f"'{module}.{name}'")):
        read_torch_bytes(_zip_pt(data), "g.pt")


def test_build_on_allowed_globals_cannot_change_them():
    # GLOBAL torch.FloatStorage; BUILD {'dtype': 'x'}: would rewrite the shared stand-in.
    from sage_jax.checkpoints import torch_reader as tr

    st = b"ctorch\nFloatStorage\n}" + _u("dtype") + _u("x") + b"sb."
    # GLOBAL torch._utils._rebuild_parameter; BUILD (None, {'__defaults__': (7,)})
    fn = b"ctorch._utils\n_rebuild_parameter\nN}" + _u("__defaults__") + b"K\x07\x85s\x86b."
    for data in (b"\x80\x02" + st, b"\x80\x02" + fn):
        with pytest.raises(CheckpointError, match="BUILD|read-only"):
            read_torch_bytes(_zip_pt(data), "b.pt")
    assert tr._ALLOWED_GLOBALS[("torch", "FloatStorage")].dtype == np.float32
    assert tr._rebuild_parameter.__defaults__ == (False, None)
    # later loads are unaffected
    assert read_torch(fixture("tiny_rosinality_ckpt.pt"))["g_ema"]["style.1.weight"].dtype == np.float32


def test_inst_and_obj_opcodes_only_reach_the_allowlist(tmp_path):
    marker = tmp_path / "pwned"
    cases = {
        b"(S'touch " + str(marker).encode() + b"'\nios\nsystem\n.": "posix.system|os.system",  # INST
        b"(ctorch\nFloatStorage\no.": "called directly",                                      # OBJ
        b"(itorch\nFloatStorage\n.": "called directly",                                        # INST
        b"\x80\x02(cbuiltins\neval\nX\x01\x00\x00\x001o.": "builtins.eval",                   # OBJ
    }
    for data, pattern in cases.items():
        with pytest.raises(CheckpointError, match=pattern):
            read_torch_bytes(_zip_pt(data), "i.pt")
    assert not marker.exists()
    # allowed classes through INST / OBJ build plain data
    assert read_torch_bytes(_zip_pt(b"(icollections\nOrderedDict\n."), "o.pt") == {}
    assert read_torch_bytes(_zip_pt(b"\x80\x02(cargparse\nNamespace\no}X\x01\x00\x00\x00aK\x01sb."), "n.pt") == {"a": 1}


def test_zip_member_names_with_path_traversal_are_never_extracted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    for prefix in ("../../evil", "/tmp/sage_jax_abs_evil", "..\\..\\evil"):
        data = torch_pickle.dumps({"w": np.arange(3, dtype=np.float32)}, "zip", name=prefix)
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        assert any(n.startswith(prefix) for n in names)
        path = work / "t.pt"
        path.write_bytes(data)
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        out = read_torch(path)  # the names are only keys into the archive
        np.testing.assert_array_equal(out["w"], np.arange(3, dtype=np.float32))
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before
        assert not os.path.exists("/tmp/sage_jax_abs_evil")


def test_compressed_member_larger_than_the_budget_is_refused_before_inflating(monkeypatch):
    from sage_jax.checkpoints import torch_reader as tr

    monkeypatch.setattr(tr, "_EXTRA_OUTPUT_BYTES", 0)  # budget: 4 x file size
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:  # a 4 MB storage deflated to ~4 KB
        src = zipfile.ZipFile(io.BytesIO(torch_pickle.dumps({"w": np.zeros(2**20, np.float32)})))
        for info in src.infolist():
            zf.writestr(info.filename, src.read(info))
    data = buf.getvalue()
    assert len(data) < 2**16
    called, real_read = [], zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda self, m, *a: called.append(m) or real_read(self, m, *a))
    with pytest.raises(CheckpointError, match="declares 4194304 bytes"):
        read_torch_bytes(data, "bomb.pt")
    assert called and all("data/" not in str(m) for m in called)  # the storage was never inflated


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_stride_zero_tensor_cannot_inflate_a_small_file(fmt):
    big = torch_pickle.Strided(np.ones(1, np.float32), (100_000, 100_000), (0, 0))  # 40 GB as an array
    data = torch_pickle.dumps({"w": big}, fmt)
    with pytest.raises(CheckpointError, match="needs 40000000000 more bytes"):
        read_torch_bytes(data, "s.pt")
    ok = torch_pickle.Strided(np.arange(3, dtype=np.float32), (2, 3), (0, 1))  # a legit expand()
    np.testing.assert_array_equal(read_torch_bytes(torch_pickle.dumps({"w": ok}, fmt), "e.pt")["w"],
                                  np.tile(np.arange(3, dtype=np.float32), (2, 1)))


def _patch_zip_headers(data, local_off, value):
    """Set a 2-byte field (offset in the local header; +2 in the central one) everywhere."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", local_off), (b"PK\x01\x02", local_off + 2)):
        i = b.find(sig)
        while i >= 0:
            b[i + off:i + off + 2] = value.to_bytes(2, "little")
            i = b.find(sig, i + 4)
    return bytes(b)


@pytest.mark.parametrize("field,value,pattern", [
    (6, 1, "encrypted"),                 # general-purpose flag bit 0 (zipfile: RuntimeError)
    (8, 8, "cannot read|corrupt"),       # stored bytes declared deflated (zlib.error)
    (8, 12, "compression method 12"),    # bzip2
    (8, 99, "compression method 99"),
])
def test_zip_header_tricks_are_checkpoint_errors(field, value, pattern):
    data = _patch_zip_headers(torch_pickle.dumps({"w": np.arange(4, dtype=np.float32)}), field, value)
    with pytest.raises(CheckpointError, match=pattern):
        read_torch_bytes(data, "z.pt")


def _deep_tuple_key(n):  # {(((1,),),...): 2}: hashing the key recursed in C and crashed
    return b"\x80\x02}K\x01" + b"\x85" * n + b"K\x02s."


def _deep_lists(n):
    return b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."


def _shared_dag(levels):  # L0 = [0, 0]; L(i+1) = [Li, Li]: 2**levels leaves if copied
    ops = [b"\x80\x02]q\x00(K\x00K\x00e"]
    for i in range(1, levels + 1):
        ops.append(b"]q" + bytes([i]) + b"(h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"e")
    return b"".join(ops) + b"."


@pytest.mark.parametrize("make", [lambda: _deep_tuple_key(1_000_000), lambda: _deep_lists(100_000),
                                  lambda: _deep_tuple_key(201)])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_deeply_nested_containers_are_refused(make, fmt):
    payload = make()
    data = _zip_pt(payload) if fmt == "zip" else _legacy_pt(payload)
    with pytest.raises(CheckpointError, match="nested deeper than 200"):
        read_torch_bytes(data, "deep.pt")


def test_moderate_nesting_and_shared_objects_load_quickly():
    import time

    assert read_torch_bytes(_zip_pt(_deep_tuple_key(150)), "ok.pt") is not None
    t = time.time()
    out = read_torch_bytes(_zip_pt(_shared_dag(120)), "dag.pt")  # 2**120 leaves if each reference were copied
    assert time.time() - t < 5
    assert out[0] is out[1] and len(out) == 2


def test_cycles_and_memo_tricks_are_errors():
    cyclic = b"\x80\x02]q\x00h\x00a."  # a list containing itself
    with pytest.raises(CheckpointError, match="cycle"):
        read_torch_bytes(_zip_pt(cyclic), "c.pt")
    huge_memo = b"\x80\x02}r\xf0\xff\xff\x7f."  # LONG_BINPUT 2**31-16: a 16 GB memo table in C
    with pytest.raises(CheckpointError, match="memo index"):
        read_torch_bytes(_zip_pt(huge_memo), "m.pt")


def test_inspect_of_a_hostile_file_fails_cleanly(tmp_path):
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_zip_pt(pickle.dumps({"state_dict": _Evil(f"touch {marker}")}, protocol=2)))
    res = subprocess.run([sys.executable, "-m", "sage_jax.cli", "inspect", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "refused to load global 'posix.system'" in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not marker.exists()


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
