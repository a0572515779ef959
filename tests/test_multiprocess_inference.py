"""Inference split over processes: ``generate``, ``invert`` and the class
statistics (``embed``) run as 2 processes x 2 CPU devices (``tests/multiprocess.py``)
write the files one process writes, byte for byte or bit for bit, every file written by
one process, the summary by process 0.

Which process wrote what is seen from inside: each process runs the command under a
Python audit hook (``sys.addaudithook``) that logs every file it opens for writing and
every rename, so a file written by two processes (the same bytes twice: a split that
was not made) is caught even though the output would look the same.
"""

import os
from pathlib import Path

import numpy as np
import pytest

import multiprocess as mp
from sage_jax.assets import ASSET_DIR
from tiny_models import make_class_folders

pytestmark = pytest.mark.heavy

# Runs ``sage-jax ARGS`` as ``python -m sage_jax.cli`` does, logging the files this
# process writes under $AUDIT_ROOT: "write PATH" for a file opened for writing, "rename
# SRC DST" for a rename (os.rename and os.replace), to writes.p{process}.txt beside it.
AUDITED_CLI = r'''
import os, sys

root = os.path.abspath(os.environ["AUDIT_ROOT"])
log = []


def under(p):
    return isinstance(p, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(p)).startswith(root + os.sep)


def hook(event, args):
    if event == "open" and under(args[0]):
        mode, flags = args[1], args[2]
        if (mode is not None and any(c in mode for c in "wax+")) or \
                (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
            log.append(("write", os.path.abspath(os.fsdecode(args[0]))))
    elif event == "os.rename" and under(args[0]):
        log.append(("rename", os.path.abspath(os.fsdecode(args[0])), os.path.abspath(os.fsdecode(args[1]))))


sys.addaudithook(hook)
from sage_jax.cli import main

code = main(sys.argv[1:])
with open(os.path.join(os.path.dirname(root), "writes.p%s.txt" % os.environ.get("JAX_PROCESS_ID", "0")), "w") as f:
    f.write("".join("\t".join(entry) + "\n" for entry in log))
sys.exit(code)
'''


def _run(tmp_path, name, args, processes, devices, out_arg=None):
    """``sage-jax ARGS --out OUT`` (``out_arg``: the path given to --out, default OUT)
    as ``processes`` x ``devices``; returns OUT and, per process, the files it produced
    (relative to OUT: opened for writing, renames followed)."""
    cwd = tmp_path / name
    out = cwd / "out"
    out.mkdir(parents=True)
    wrapper = tmp_path / "audited_cli.py"
    if not wrapper.exists():
        wrapper.write_text(AUDITED_CLI)
    target = out_arg(out) if out_arg else out
    mp.run([str(wrapper), *args, "--out", str(target)], processes, devices, cwd=str(cwd),
           env={"AUDIT_ROOT": str(out)}, timeout=400)
    produced = {}
    for rank in range(processes):
        files: set = set()
        for line in (cwd / f"writes.p{rank}.txt").read_text().splitlines():
            kind, *paths = line.split("\t")
            if kind == "write":
                files.add(paths[0])
            else:
                files.discard(paths[0])
                files.add(paths[1])
        produced[rank] = {os.path.relpath(p, out) for p in files}
    return out, produced


def _files(out) -> set:
    return {str(p.relative_to(out)) for p in Path(out).rglob("*") if p.is_file()}


def _same_bytes(a, b, files):
    differ = [f for f in sorted(files) if (Path(a) / f).read_bytes() != (Path(b) / f).read_bytes()]
    assert not differ, f"files that differ: {differ[:10]}"


def test_generate_splits_the_classes_and_writes_what_one_process_writes(tmp_path):
    shots = make_class_folders(tmp_path / "shots", n_classes=5, per_class=2, seed=3)
    args = ["generate", "--model", ASSET_DIR, "--shots", str(shots), "--n", "6", "--batch-size", "4",
            "--save-codes", "--quiet"]
    out, produced = _run(tmp_path, "2x2", args, 2, 2)
    classes = [f"class{c:02d}" for c in range(5)]
    files = _files(out)
    assert files == {f"{c}/{f}" for c in classes
                     for f in [f"sage_{j:04d}.png" for j in range(6)] + ["shots.png", "grid_sage.png"]} \
        | {"codes.npy", "generation.json", "skipped.txt"}
    # every file written by one process: classes 0-2 by process 0, 3-4 by process 1
    # (process_share of 5), the summary by process 0
    assert produced[0] | produced[1] == files
    assert not produced[0] & produced[1], f"written by both processes: {sorted(produced[0] & produced[1])[:5]}"
    assert {f.split("/")[0] for f in produced[1]} == {"class03", "class04"}
    assert {"codes.npy", "generation.json", "skipped.txt"} <= produced[0]
    # the same bytes as one process with 4 devices and with 1: the same images, codes and summary
    # (every device decodes --batch-size images, so the numbers cannot depend on the split)
    for processes, devices in ((1, 4), (1, 1)):
        other, _ = _run(tmp_path, f"{processes}x{devices}", args, processes, devices)
        assert _files(other) == files
        _same_bytes(out, other, files)
    codes = np.load(out / "codes.npy")
    assert codes.shape == (5, 6, 18, 64) and np.isfinite(codes).all()
    assert np.abs(codes[0] - codes[3]).max() > 1e-3 and np.abs(codes[0, 0] - codes[0, 1]).max() > 1e-3


def test_invert_splits_the_images_and_gives_one_process_codes(tmp_path):
    imgs = make_class_folders(tmp_path / "imgs", n_classes=3, per_class=3, seed=4, layout="files")
    (imgs / "class01_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")   # skipped, in process 1's share
    args = ["invert", "--checkpoint", ASSET_DIR, "--images", str(imgs), "--batch-size", "2", "--quiet"]
    out, produced = _run(tmp_path, "2x2", args, 2, 2)
    one, _ = _run(tmp_path, "1x1", args, 1, 1)
    files = _files(out)
    recon = sorted(f for f in files if f.startswith("recon/"))
    assert len(recon) == 9 and files == set(recon) | {"codes.npy", "offsets.npy", "files.txt", "skipped.txt",
                                                       "inversion.json", "recon_grid.png"}
    assert _files(one) == files
    # bit for bit: the encoder's codes of an image do not depend on the batch it was in, so
    # long as every device encodes --batch-size images (the padding rows are dropped)
    _same_bytes(out, one, files)
    names = (out / "files.txt").read_text().split()
    assert [os.path.basename(n) for n in names] == sorted(p.name for p in imgs.iterdir() if "broken" not in p.name)
    assert np.load(out / "codes.npy").shape == (9, 8, 64)
    # process 0 the first 5 files (rows 0-4), process 1 the last 5 (one unreadable: rows 5-8)
    assert produced[0] | produced[1] == files and not produced[0] & produced[1]
    assert sorted(produced[1]) == recon[5:]
    assert "skipped.txt" in produced[0] and "codes.npy" in produced[0]


def test_class_statistics_over_two_processes_equal_one(tmp_path):
    seen = make_class_folders(tmp_path / "seen", n_classes=6, per_class=5, seed=1)
    (seen / "class05" / "9.png").write_bytes(b"")   # the last batch's (process 1's): skipped everywhere
    args = ["embed", "--checkpoint", ASSET_DIR, "--data", str(seen), "--batch-size", "4", "--quiet"]

    def stats_file(out):
        return out / "stats.npz"

    out, produced = _run(tmp_path, "2x2", args, 2, 2, stats_file)
    one, _ = _run(tmp_path, "1x1", args, 1, 1, stats_file)
    assert produced == {0: {"stats.npz"}, 1: set()}
    with np.load(out / "stats.npz") as a, np.load(one / "stats.npz") as b:
        assert sorted(a.files) == sorted(b.files) and "n_m2" in a.files
        for k in a.files:   # bit for bit: the batches' codes are summed in the same order
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a["counts"].tolist() == [5] * 6
    # process 0 reports the file process 1 skipped
    assert "1 image(s) skipped" in (tmp_path / "2x2" / "p0.log").read_text()


def test_classwise_evaluation_splits_the_classes(tmp_path):
    """``evaluate --metrics classwise`` (the per-class generation of conditional
    generators) as 2 x 2: each process generates and measures its classes, process 0
    alone writes the results, which equal one process's."""
    import json

    import jax

    from sage_jax import checkpoints
    from sage_jax.data import synthetic as S
    from sage_jax.models import init_generator

    spec = S.SyntheticSpec(samples_per_class=2)   # the tiny classes the shipped oracles know
    S.write_folder(spec, str(tmp_path / "real"), "seen")
    names = [c.name for c in S.split_classes(S.make_classes(spec), "seen")][:5]
    G = init_generator(dict(size=32, style_dim=8, n_mlp=1, channels=((4, 8), (8, 8), (16, 8), (32, 8)), c_dim=5),
                       jax.random.PRNGKey(0))
    checkpoints.save_model(tmp_path / "g", G, extra={"class_names": names, "class_counts": [9, 5, 3, 2, 1]})
    args = ["evaluate", "--real", str(tmp_path / "real"), "--conditional", f"a={tmp_path / 'g'}",
            "--metrics", "classwise", "--per-class", "3", "--oracles", os.path.join(ASSET_DIR, "oracles"), "--quiet"]
    out, produced = _run(tmp_path, "2x2", args, 2, 2)
    one, _ = _run(tmp_path, "1x1", args, 1, 1)
    assert {"classwise.json", "classwise.md"} <= produced[0] and not produced[1] & {"classwise.json", "classwise.md"}
    a, b = (json.load(open(d / "classwise.json")) for d in (out, one))
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    assert [r["class"] for r in a["models"]["a"]["per_class"]] == names
