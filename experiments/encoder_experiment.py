"""One run of the pipeline's encoder stage against a finished generator, judged by
existing oracles: the quick loop for comparing encoder settings without
training the oracles and the generator again.

    # the tiny config's pSp encoder against the shipped run's generator
    python experiments/encoder_experiment.py --workdir runs/enc_exp/psp --generator runs/tiny/gan/g_ema
    # an iterative (ReStyle) encoder, 2 passes, 3,000 steps; judged as trained and refined 10 steps
    python experiments/encoder_experiment.py --workdir runs/enc_exp/restyle2 --generator runs/tiny/gan/g_ema \\
        --config.psp.restyle_iterations=2 --config.psp.steps=3000 --refine 0,10
    # the reconstruction recipe's own plain encoder (one W code per image), from the GAN stage's checkpoint
    python experiments/encoder_experiment.py --recipe-encoder runs/tiny/gan

It trains (or resumes) ``sage_jax.train.encoder.train_encoder`` with the config's
``model.encoder`` and ``psp`` sections in ``--workdir``, then prints one JSON line per
``--refine`` value: the inversion's stage measures (oracle retention and MSE of
reconstructions of held-out real images, seen and unseen classes; the pipeline's own
measure, :mod:`sage_jax.metrics.stages`) and the seconds taken. ``--per-class`` adds, per
unseen class, how many reconstructions keep it and what the others become.
``--extra-classes N`` also trains on N more combinations of the synthetic factor values
(shape, palette, texture, orientation) that are neither seen nor unseen classes: does
the encoder reach the unseen classes when it has seen more combinations?
``--generator`` takes a generator directory (``gan/g_ema``) or a pSp directory (its
decoder). ``--oracles`` defaults to the shipped model's (trained on the tiny config's
synthetic data). Two runs side by side on a 2-core machine: ``taskset -c 0 ...`` and
``taskset -c 1 ...`` with ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``.
"""

import argparse
import collections
import json
import os
import sys
import time


def _per_class(judge, reconstruct, per_class: int) -> dict:
    """Unseen class -> {kept, became: the three commonest oracle classes}."""
    import numpy as np

    from sage_jax.metrics.stages import class_probabilities, heldout_images

    images, _ = heldout_images(judge.spec, judge.unseen, per_class)
    recon = np.concatenate([np.asarray(reconstruct(images[s:s + 50])) for s in range(0, len(images), 50)])
    pred = class_probabilities(judge.oracles, recon, size=judge.size).argmax(axis=1)
    names = judge.oracles.class_names
    out = {}
    for j, c in enumerate(judge.unseen):
        got = [names[k] for k in pred[j * per_class:(j + 1) * per_class]]
        out[c.name] = {"kept": sum(g == c.name for g in got),
                       "became": collections.Counter(got).most_common(3)}
    return out


def _with_extra_classes(cfg, data, n_extra: int, per_class: int):
    """The seen training images plus ``per_class`` images of each of ``n_extra`` more
    combinations of the synthetic factor values, drawn (seeded) from those that are
    neither seen nor unseen classes of the config: the encoder sees more combinations,
    the unseen classes stay unseen."""
    import dataclasses
    import itertools

    import jax
    import numpy as np

    from sage_jax.data import synthetic as syn
    from sage_jax.data.loader import synthetic_spec
    from sage_jax.data.arrays import ArrayDataset

    spec = synthetic_spec(cfg.data, cfg.model.encoder.input_size)
    classes = syn.make_classes(spec)
    taken = {c.name for c in classes}
    combos = [(s, p, t, None) for s, p, t in itertools.product(syn.FREE_SHAPES, syn.PALETTE_NAMES, syn.TEXTURES)]
    combos += list(itertools.product(syn.ORIENTED_SHAPES, syn.PALETTE_NAMES, syn.TEXTURES, syn.ORIENTATIONS))
    free = [c for c in combos if syn._class_name(*c) not in taken]
    if n_extra > len(free):
        raise SystemExit(f"--extra-classes {n_extra}: only {len(free)} combinations are neither seen nor unseen")
    pick = np.random.default_rng(int(cfg.data.get("seed", 0)) + 1).permutation(len(free))[:n_extra]
    template = classes[0]
    extra = [dataclasses.replace(template, name=syn._class_name(*free[i]), shape=free[i][0], palette=free[i][1],
                                 texture=free[i][2], orientation=free[i][3],
                                 family="free" if free[i][3] is None else "oriented", seen=True,
                                 index=len(classes) + j) for j, i in enumerate(pick)]
    labels = np.repeat(np.arange(n_extra), per_class)
    index = np.tile(np.arange(per_class), n_extra)
    d = syn._dataset(spec, labels, extra, index, jax.random.fold_in(jax.random.PRNGKey(spec.seed), 91))
    images = np.concatenate([data.images, d["images"]])
    all_labels = np.concatenate([data.labels_array, labels + data.num_classes])
    return ArrayDataset(images, all_labels, list(data.class_names) + [c.name for c in extra])


def _recipe_reconstructor(gan_dir: str):
    """``images -> images`` of the reconstruction recipe's plain encoder and synthesis
    network, read from the GAN stage's last checkpoint and ``g_ema``."""
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from sage_jax import checkpoints
    from sage_jax.nn.plain import PlainEncoder

    G = checkpoints.load_generator(os.path.join(gan_dir, "g_ema"))
    ckpt_root = os.path.join(os.path.abspath(gan_dir), "checkpoints")
    steps = sorted(int(d) for d in os.listdir(ckpt_root) if d.isdigit())
    if not steps:
        raise SystemExit(f"{ckpt_root} holds no checkpoints")
    state = ocp.StandardCheckpointer().restore(os.path.join(ckpt_root, str(steps[-1]), "default"))
    if "e" not in state.get("params", {}):
        raise SystemExit(f"{gan_dir} was not trained by the reconstruction recipe (no plain encoder)")
    e = state["params"]["e"]
    width = int(e["Conv_0"]["kernel"].shape[-1])
    enc = PlainEncoder(width, G.style_dim)
    encode = jax.jit(lambda x: enc.apply({"params": e}, x))

    def reconstruct(x):
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:3] != (G.size, G.size):   # the encoder was trained at the generator's size
            x = jax.image.resize(x, (x.shape[0], G.size, G.size, 3), "bilinear")
        w = encode(x)
        return G(jnp.broadcast_to(w[:, None], (w.shape[0], G.n_latent, G.style_dim)), input_is_latent=True)

    return reconstruct, steps[-1]


def main(argv=None) -> int:
    from sage_jax.config import parse_with_config
    from sage_jax.demo import ASSET_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", help="run directory (resumable)")
    p.add_argument("--generator", help="generator directory (gan/g_ema) or pSp directory")
    p.add_argument("--recipe-encoder", metavar="GAN_DIR",
                   help="judge the reconstruction recipe's plain encoder of this GAN stage instead of training")
    p.add_argument("--refine", default="0", help="comma-separated refinement steps to judge (default 0)")
    p.add_argument("--per-class", action="store_true", help="also what each unseen class's reconstructions become")
    p.add_argument("--extra-classes", type=int, default=0, metavar="N",
                   help="also train on N more combinations of the factor values (neither seen nor unseen)")
    p.add_argument("--extra-per-class", type=int, default=200, help="images per extra combination (default 200)")
    p.add_argument("--oracles", default=os.path.join(ASSET_DIR, "oracles"), help="oracle directory")
    a, cfg = parse_with_config(p, sys.argv[1:] if argv is None else argv)
    try:
        refine = [int(s) for s in a.refine.split(",")]
    except ValueError:
        p.error(f"--refine must be comma-separated whole numbers, got {a.refine!r}")
    if any(r < 0 for r in refine):
        p.error("--refine steps must be >= 0")
    if not os.path.exists(os.path.join(a.oracles, "oracles.json")):
        p.error(f"{a.oracles} holds no oracles (oracles.json); give --oracles")
    if a.extra_classes < 0 or a.extra_per_class < 1:
        p.error("--extra-classes must be >= 0 and --extra-per-class >= 1")
    if a.extra_classes and cfg.data.name != "synthetic":
        p.error("--extra-classes needs the synthetic data")
    if a.recipe_encoder is None and (a.workdir is None or a.generator is None):
        p.error("give --workdir and --generator (or --recipe-encoder GAN_DIR)")

    from sage_jax.pipeline import _StageJudge, inversion_setting

    judge = _StageJudge(cfg, a.oracles)
    per_class = int(cfg.quality.heldout_per_class)
    if a.recipe_encoder:
        from sage_jax.metrics.stages import heldout_images, inversion_quality

        reconstruct, step = _recipe_reconstructor(a.recipe_encoder)
        row = {"encoder": "reconstruction recipe's plain encoder", "checkpoint_step": step}
        for split, classes in (("seen", judge.seen), ("unseen", judge.unseen)):
            images, _ = heldout_images(judge.spec, classes, per_class)
            names = [c.name for c in classes for _ in range(per_class)]
            row[split] = inversion_quality(reconstruct, judge.oracles, images, names, size=judge.size)
        if a.per_class:
            row["unseen_classes"] = _per_class(judge, reconstruct, per_class)
        print(json.dumps(row), flush=True)
        return 0

    from sage_jax import checkpoints
    from sage_jax.data.loader import seen_dataset
    from sage_jax.inversion import Inverter
    from sage_jax.train.encoder import train_encoder

    if os.path.exists(os.path.join(a.generator, "psp.json")):
        G = checkpoints.load_psp(a.generator, with_encoder=False).decoder
    else:
        G = checkpoints.load_generator(a.generator)
    data = seen_dataset(cfg.data, cfg.model.encoder.input_size)
    if a.extra_classes:
        data = _with_extra_classes(cfg, data, a.extra_classes, a.extra_per_class)
        print(f"training on {len(data)} images of {data.num_classes} combinations "
              f"({a.extra_classes} beyond the seen classes)", flush=True)
    t0 = time.perf_counter()
    psp = train_encoder(cfg.model.encoder, G, cfg.psp, data, a.workdir, quiet=False)
    train_s = time.perf_counter() - t0
    for r in refine:
        cfg.inversion.refine_steps = r
        inverter = Inverter(psp, inversion_setting(cfg))
        t1 = time.perf_counter()
        row = {"steps": int(cfg.psp.steps), "restyle_iterations": psp.restyle_iterations,
               "extra_classes": a.extra_classes, "refine": r,
               "train_s": round(train_s), **judge.inversion(psp, inverter)}
        row["judge_s"] = round(time.perf_counter() - t1)
        if a.per_class:
            row["unseen_classes"] = _per_class(
                judge, lambda x: psp.decoder(psp.absolute_codes(inverter(x)), input_is_latent=True), per_class)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
