"""The classifier training loops across processes: ``batch_size`` is the
global batch, each process feeds its rows of it, and training gives what one process
with the same devices gives.

Two loops: ``fit_small_classifier`` (the oracles, Softlabel-GAN's labeller) and
``train.classifier._fit`` (pre-training and fine-tuning, SGIA's balanced and bridging
fine-tuning: NAS and the few-shot extractor). Each runs as 2 processes x 2 CPU devices
and as 1 process x 4 devices, on the same 4-device mesh; process 0 writes the global
batches it trained on, the parameters and the losses, and the two runs must agree
(:func:`_assert_same`).
"""

import multiprocess as mp
import numpy as np
import pytest

SCRIPT = r"""
import os
import sys

from sage_jax import parallel

parallel.initialize()
parallel.enable_compilation_cache()

import jax
import numpy as np
import optax

from sage_jax.data import synthetic as syn

out = sys.argv[1]
spec = syn.SyntheticSpec(num_seen=4, num_unseen=2, samples_per_class=12, image_size=16, seed=5,
                         oriented_fraction=0.5)
result = {}

# every global batch the loops build, gathered from the processes (observed, not changed)
fed = []
_shard = parallel.shard_batch


def recorded(batch, mesh):
    global_batch = _shard(batch, mesh)
    fed.append(parallel.to_host(global_batch))
    return global_batch


parallel.shard_batch = recorded


def flat(prefix, tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        result[prefix + "/" + "/".join(str(getattr(p, "key", p)) for p in path)] = np.asarray(leaf)


def same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(la, lb))


def lr_sum(schedule, steps):
    return float(sum(schedule(s) for s in range(steps)))


def save(name):
    for i, batch in enumerate(fed):
        for j, leaf in enumerate(jax.tree_util.tree_leaves(batch)):
            result[f"batches/{i:03d}/{j}"] = leaf
    if parallel.is_main():
        np.savez(os.path.join(out, name + ".npz"), **result)
    fed.clear()
    result.clear()


def oracles():   # fit_small_classifier
    from sage_jax.metrics.oracles import Oracles, train_oracles

    d = syn.generate(spec, "all")
    o = train_oracles(d["images"], d["labels"], d["factors"], d["factor_mask"], d["class_names"],
                      list(syn.FACTOR_NAMES), key=jax.random.PRNGKey(3), steps=6, batch=8)
    o.save(os.path.join(out, "oracles"))               # process 0 writes
    parallel.barrier("oracles-saved")
    back = Oracles.load(os.path.join(out, "oracles"))  # every process reads what process 0 trained
    same(back.clf_params, o.clf_params)
    same(back.reg_params, o.reg_params)
    assert back.scores == o.scores
    flat("clf", o.clf_params)
    flat("reg", o.reg_params)
    u = lr_sum(optax.cosine_decay_schedule(2e-3, 6), 6)   # fit_small_classifier's schedule
    result["budget/clf"] = result["budget/reg"] = np.array([6, u])
    save("oracles")

def classifiers():   # _fit: pre-training, SGIA's bridging fine-tuning (balanced sampler, then real images)
    from sage_jax.nn.classifiers import ResNet
    from sage_jax.train import classifier as tc

    seen, unseen = syn.generate(spec, "seen"), syn.generate(spec, "unseen")
    kw = dict(lr=1e-3, weight_decay=1e-4, warmup_steps=1, batch_size=8)
    pre = tc.pretrain(ResNet(4, widths=(8, 16), blocks=(1, 1)), seen["images"], seen["labels"],
                      key=jax.random.PRNGKey(0), steps=4, **kw)
    xu, yu = unseen["images"], unseen["labels"]
    final, bridge = tc.bridging_finetune(pre, (xu[::2], yu[::2]), (xu[1::2], yu[1::2]), key=jax.random.PRNGKey(1),
                                         alpha=0.5, stage1_steps=3, stage2_steps=3, **kw)
    tc.save_classifier(final, os.path.join(out, "clf"))
    parallel.barrier("classifier-saved")
    same(tc.load_classifier(os.path.join(out, "clf")).params, final.params)
    flat("pretrain", pre.params)
    flat("final", final.params)
    for name, clf in (("pretrain", pre), ("bridge", bridge), ("final", final)):
        result["losses/" + name] = clf.losses
    sched = lambda n: tc.make_optimizer(n, lr=kw["lr"], weight_decay=1e-4, warmup_steps=1, optimizer="adamw")[1]
    result["budget/pretrain"] = np.array([4, lr_sum(sched(4), 4)])
    result["budget/final"] = np.array([10, lr_sum(sched(4), 4) + 2 * lr_sum(sched(3), 3)])
    result["budget/losses"] = result["budget/final"]
    save("classifiers")


oracles()
classifiers()
"""

EPS = float(np.finfo(np.float32).eps)
DEVICES = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both loops trained as 2 processes x 2 devices and as 1 process x 4 devices (one
    script, the two runs at once: they are mostly start-up and compilation):
    {loop: {(processes, devices): process 0's arrays}}."""
    tmp = tmp_path_factory.mktemp("classifiers")
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    runs = {}
    for procs, devs in ((2, 2), (1, 4)):
        cwd = tmp / f"{procs}x{devs}"
        cwd.mkdir()
        runs[(procs, devs)] = (cwd, mp.start([str(script), str(cwd)], procs, devs, str(cwd)))
    try:
        for cwd, started in runs.values():
            mp.wait(started, timeout=400, cwd=str(cwd))
    finally:   # a failed run: end the other one's processes too
        for _, started in runs.values():
            for proc in started:
                if proc.poll() is None:
                    proc.kill()
    return {loop: {layout: dict(np.load(cwd / f"{loop}.npz")) for layout, (cwd, _) in runs.items()}
            for loop in ("oracles", "classifiers")}


def _rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64)))))


def tolerance(p, steps: int, lr_sum: float, devices: int = DEVICES) -> float:
    """How far apart (RMS over a tensor) two float32 trainings of ``p`` may end when
    they differ only in the order the all-reduce adds the ``devices`` devices' partial
    gradients (the in-process sum against gloo's across processes), after ``steps``
    Adam steps of learning rates summing to ``lr_sum``:

    * every step rounds ``p + update`` to float32; two updates a hair apart may round
      to neighbours: at most one ulp, ``eps |p|``, per step (the parameter's own scale);
    * every step's gradient is a sum of ``devices`` terms: reordered, it moves by at
      most ``(devices - 1) eps`` relative; Adam's step (the normalised gradient times
      the learning rate) carries that at the step's own size, ``lr_s``, and a change
      made at one step can be carried along by each of the ``steps`` steps that
      follow (linear growth: a few steps, no more).

    So ``rms(diff) <= steps eps rms(p) + (devices - 1) steps eps lr_sum``. RMS, not
    the largest element: an element whose partial gradients cancel has an arbitrarily
    large relative rounding error; over a tensor it averages out. A summation-order
    difference inside a device (its rows summed in another grouping) is not covered."""
    return steps * EPS * _rms(p) + (devices - 1) * steps * EPS * lr_sum


def _assert_same(a: dict, b: dict):
    """The same global batches bit for bit; every parameter tensor within
    :func:`tolerance` of the other run; the losses within the relative rounding of their
    all-reduced mean ((devices - 1) eps) grown over the steps.

    (The two runs are not bit for bit the same: gloo adds the four devices' gradients in
    another order than the in-process all-reduce. Processes that each fed the whole
    batch instead of their rows would build a global batch of twice the rows: with
    augmentation the parameters move by the size of the updates; without it (the
    oracles) a mean over every example twice is the same training up to rounding, and
    the batch check is what sees it.)"""
    assert sorted(a) == sorted(b)
    batches = sorted(k for k in a if k.startswith("batches/"))
    assert batches
    for k in batches:
        assert a[k].shape == b[k].shape, f"{k}: global batch of {a[k].shape} against {b[k].shape}"
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ratios = {}
    for k, x in a.items():
        if k.startswith(("batches/", "budget/")):
            continue
        steps, lr_sum = b["budget/" + k.split("/")[0]]
        assert x.shape == b[k].shape, k
        if k.startswith("losses/"):
            np.testing.assert_allclose(x, b[k], rtol=(DEVICES - 1) * steps * EPS, atol=0, err_msg=k)
            continue
        ratios[k] = _rms(x - b[k]) / tolerance(b[k], int(steps), lr_sum)
    worst = max(ratios, key=ratios.get)
    assert ratios[worst] <= 1, f"{worst}: RMS difference {ratios[worst]:.3g} x the tolerance"


@pytest.mark.heavy
def test_oracles_train_the_same_on_two_processes(trained):
    r = trained["oracles"]
    _assert_same(r[(2, 2)], r[(1, 4)])


@pytest.mark.heavy
def test_pretraining_and_bridging_fine_tuning_the_same_on_two_processes(trained):
    r = trained["classifiers"]
    _assert_same(r[(2, 2)], r[(1, 4)])


REFUSE = r"""
from sage_jax import parallel

parallel.initialize()
import jax
import numpy as np

from sage_jax.metrics.nas import default_nas_config, naive_augmentation_score
from sage_jax.metrics.oracles import train_oracles
from sage_jax.nn.classifiers import ResNet
from sage_jax.train import classifier as tc

assert jax.device_count() == 4
x = np.zeros((12, 8, 8, 3), np.float32)
y = np.arange(12) % 2
cfg = default_nas_config()
cfg.n_shots, cfg.n_generated, cfg.finetune.batch_size = 2, 2, 6
calls = {
    "oracles": lambda: train_oracles(x, y, np.zeros((12, 2), np.float32), np.ones((12, 2), bool), ["a", "b"],
                                     ["f", "g"], key=jax.random.PRNGKey(0), steps=1, batch=6),
    "pretrain": lambda: tc.pretrain(ResNet(2, widths=(8,), blocks=(1,)), x, y, key=jax.random.PRNGKey(0),
                                    steps=1, batch_size=6),
    "nas": lambda: naive_augmentation_score(None, (x, y), (x, y), (x, y), config=cfg, seeds=(0,)),
}
for name, call in calls.items():
    try:
        call()
    except ValueError as e:
        print(name, "|", e)
    else:
        print(name, "| accepted")
"""


def test_a_batch_not_splitting_over_the_devices_is_refused(tmp_path):
    """One process with 4 devices: a global batch of 6 is refused before any training,
    by the oracles, pre-training and NAS, with sizes that work (4 or 8)."""
    (tmp_path / "refuse.py").write_text(REFUSE)
    mp.run([str(tmp_path / "refuse.py")], 1, 4, str(tmp_path), timeout=120)
    lines = dict(ln.split(" | ", 1) for ln in (tmp_path / "p0.log").read_text().splitlines() if " | " in ln)
    assert sorted(lines) == ["nas", "oracles", "pretrain"], lines
    for name, what in (("oracles", "oracles.batch_size 6"), ("pretrain", "batch_size 6"),
                       ("nas", "the NAS finetune.batch_size 6")):
        assert lines[name].startswith(what), lines[name]
        assert "does not split over the 4 devices" in lines[name] and "e.g. 4 or 8" in lines[name], lines[name]
