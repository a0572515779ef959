"""Benchmarks, printed as a table and saved as JSON.

SAGE generation throughput: images/s for ``--n-images`` images of one unseen class
(1-shot), our jitted + vmapped sampler with chunked decoding, against a per-sample
Python loop written to mirror the official ``tools/inference_1_shot.py`` (for every
image: encode the shot, map its embedding, retrieve the similar classes, compute the
local statistics in numpy, draw one sample, decode one image), same models, same
process, after compilation (both paths are warmed up first).

Models: ``256`` uses the fixture-size networks of ``../shared/fixtures`` (config-f
StyleGAN2 at 256 px, pSp IR-SE50 encoder, the 40-class editing fixture's dictionary
and statistics); ``tiny`` the 32 px tiny architecture with the fixture's tiny decoder.

    python scripts/benchmark.py                 # both sizes, 128 images per class
    python scripts/benchmark.py --quick         # fewer images at 256 px
    python scripts/benchmark.py --sizes tiny --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from sage_jax import checkpoints  # noqa: E402
from sage_jax.generation import EditingState, SampleOptions, SageGenerator, sample_codes  # noqa: E402
from sage_jax.models import PSPModel, init_encoder  # noqa: E402
from sage_jax.sage import editing as ed  # noqa: E402
from sage_jax.statistics import ClassStatistics, fingerprint  # noqa: E402


def _editing_fixture(style_dim, n_layers_enc):
    """Class embeddings, A and per-class n_hat of the 40-class editing fixture, cut or
    tiled to the encoder's code size."""
    from fixture_utils import fixture

    r = np.load(fixture("sage_adaptive_editing.npz"))
    emb = r["class_embeddings"][:, :n_layers_enc, :style_dim]
    A = r["A"][:, :style_dim]
    ns = r["ns_per_class"]
    S = ns.shape[0]
    labels = np.repeat(np.arange(S), ns.shape[1])
    moments = ed.moments_from_codes(jnp.asarray(ns.reshape(-1, *ns.shape[2:])), jnp.asarray(labels), S)
    return emb, A, moments, ns


def build(size: str):
    """(psp model, dictionary A, class statistics, raw per-class n_hat) for a size."""
    from fixture_utils import fixture, state_dict_from_manifest

    if size == "256":
        G = checkpoints.load_generator(state_dict_from_manifest("stylegan2_generator_256.json")[0])
        E = checkpoints.load_encoder(state_dict_from_manifest("psp_gradual_style_encoder_ir_se50.json")[0])
    else:
        G = checkpoints.load_generator(fixture("tiny_rosinality_ckpt.pt"))
        E = init_encoder(dict(input_size=32, n_styles=18, style_dim=64, widths=(16, 16, 32, 64)),
                         jax.random.PRNGKey(0))
    avg = np.zeros((G.n_latent, G.style_dim), np.float32)
    psp = PSPModel(E, G, avg, {"start_from_latent_avg": True, "output_size": G.size})
    emb, A, moments, ns = _editing_fixture(G.style_dim, E.n_styles)
    stats = ClassStatistics([f"c{i:03d}" for i in range(emb.shape[0])], np.full(emb.shape[0], ns.shape[1]),
                            emb, fingerprint(E.variables), jax.tree_util.tree_map(np.asarray, moments), "bench")
    return psp, jnp.asarray(A), stats, ns


def dictionary_with(A):
    """A DictionaryModel (official groups) whose A is the given one."""
    from sage_jax.models import DictionaryModel, init_dictionary

    d = init_dictionary({"groups": ((0, 1, 2), (3, 4, 5)), "style_dim": A.shape[1], "a_length": A.shape[2]},
                        jax.random.PRNGKey(0))
    params = dict(d.variables["params"], A=jnp.asarray(A))
    return DictionaryModel(d.config, {"params": params})


def ours(psp, A, stats, shot, n, opts, chunk):
    gen = SageGenerator(psp, dictionary_with(A), stats, check=False)

    def run():
        raw = gen.encode(shot[None])
        codes = gen.codes(jax.random.PRNGKey(0), raw[None], n, opts)[0]
        return np.concatenate(list(gen.decode(codes, chunk)))

    run()  # compile
    t = time.perf_counter()
    imgs = run()
    return time.perf_counter() - t, imgs


def official_loop(psp, A, stats, ns, shot, n, opts):
    """Mirrors the official inference loop: everything per image, statistics in numpy."""
    E, G = psp.encoder, psp.decoder
    emb = jnp.asarray(stats.embeddings)
    basis = ed.relevant_basis(emb)
    A_np = np.asarray(A)
    rng = np.random.default_rng(0)
    avg = jnp.asarray(psp.latent_avg)

    def one():
        latents = E(shot[None])[0]                                            # net.get_latents
        ce = ed.map_embedding(latents, basis, opts.retrieval_t_B)            # get_ce
        cates = np.asarray(ed.similar_classes(ce, emb, opts.t_C))            # get_similar_cate
        local = np.concatenate([ns[c] for c in cates])                       # local_ns
        codes = local.transpose(1, 0, 2)                                      # calc_statis
        mean, mean_abs = codes.mean(1), np.abs(codes).mean(1)
        covs = [np.cov(codes[i].T) for i in range(codes.shape[0])]
        base = np.array(ed.map_embedding(latents, basis, opts.t_B[0]))
        dws = []
        for i in range(mean.shape[0]):                                        # sampler
            draw = rng.multivariate_normal(mean[i], covs[i])
            beta = np.sort(mean_abs[i])[::-1][opts.t_A]
            dws.append(A_np[i] @ (draw * (mean_abs[i] > beta)))
        base[: len(dws)] += opts.alpha * np.stack(dws)
        w = jnp.asarray(base[None, : G.n_latent]) + avg
        return np.asarray(G(w, input_is_latent=True))                         # net.decode

    one()  # compile
    t = time.perf_counter()
    for _ in range(n):
        one()
    return time.perf_counter() - t


def generator_throughput(G, batch, reps=2):
    w = jnp.zeros((batch, G.n_latent, G.style_dim))
    G(w, input_is_latent=True).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        G(w, input_is_latent=True).block_until_ready()
    return batch * reps / (time.perf_counter() - t)


TRAIN_STEPS = {"tiny": 40, "256": 2}   # timed steps per config (after a compiling warm-up run)


def training_speed(config_name: str, steps: int, batch: int | None = None) -> dict:
    """GAN training steps/s and images/s (after compilation) on this process's devices.
    ``tiny``: synthetic 32 px data; ``256``: the animal-faces config on random images."""
    import tempfile

    from sage_jax.config import apply_overrides, load_config
    from sage_jax.train.common import ArrayDataset
    from sage_jax.train.gan import train_gan

    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py" if config_name == "tiny" else "animal_faces.py"))
    n_dev = jax.device_count()
    batch = batch or (cfg.gan.batch_size if config_name == "tiny" else n_dev)
    batch = max(n_dev, batch // n_dev * n_dev)
    apply_overrides(cfg, [f"gan.batch_size={batch}", "gan.sample_every=0", "gan.ckpt_every=1000000",
                          f"gan.log_every={steps}", "data.samples_per_class=8", "gan.augment=false"])
    size = cfg.model.generator.size
    rng = np.random.default_rng(0)
    if config_name == "tiny":
        from sage_jax.data.loader import seen_dataset

        data = seen_dataset(cfg.data)
    else:
        data = ArrayDataset(rng.uniform(-1, 1, (4 * batch, size, size, 3)).astype(np.float32),
                            np.zeros(4 * batch, np.int32))
    warm = max(cfg.gan.d_reg_every, cfg.gan.g_reg_every) if config_name == "tiny" else 1
    with tempfile.TemporaryDirectory() as work:
        cfg.gan.steps = warm
        t0 = time.perf_counter()
        train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, work, quiet=True)
        compile_s = time.perf_counter() - t0
        cfg.gan.steps = warm + steps
        t0 = time.perf_counter()
        train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, work, quiet=True)
        dt = time.perf_counter() - t0
    return {"config": config_name, "devices": n_dev, "batch": batch, "steps": steps,
            "steps_per_s": steps / dt, "images_per_s": steps * batch / dt, "first_run_s": compile_s}


def _training_table(rows):
    print(f"{'config':>6} {'devices':>7} {'batch':>5} {'steps/s':>8} {'img/s':>8} {'first run (s)':>13}")
    for r in rows:
        print(f"{r['config']:>6} {r['devices']:>7} {r['batch']:>5} {r['steps_per_s']:>8.3f} "
              f"{r['images_per_s']:>8.2f} {r['first_run_s']:>13.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "256"], choices=["tiny", "256"])
    p.add_argument("--n-images", type=int, default=128, help="images per class (default 128)")
    p.add_argument("--quick", action="store_true", help="32 images at 256 px instead of --n-images")
    p.add_argument("--chunk", type=int, default=16, help="generator batch of our path (default 16)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--train", nargs="*", default=None, choices=["tiny", "256"],
                   help="also benchmark GAN training for these configs (tiny: 40 steps, 256: 2 steps)")
    p.add_argument("--train-devices", type=int, default=0,
                   help="also run the --train benchmarks on this many simulated CPU devices (subprocess)")
    p.add_argument("--skip-generation", action="store_true", help="only the training benchmark")
    args = p.parse_args(argv)
    if args.train is not None and not args.train:
        args.train = ["tiny", "256"]

    results = {"machine": {"platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
                           "cpus": os.cpu_count(), "jax": jax.__version__}, "sage_generation": []}
    if not args.skip_generation:
        print(f"{'size':>5} {'images':>6} {'ours img/s':>11} {'loop img/s':>11} {'ratio':>7} {'G-only img/s':>13}")
    for size in ([] if args.skip_generation else args.sizes):
        n = 32 if (args.quick and size == "256") else args.n_images
        psp, A, stats, ns = build(size)
        opts = SampleOptions(t_B=(10,), t_C=8, t_A=20, alpha=1.0)
        shot = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (psp.encoder.input_size,) * 2 + (3,),
                                             minval=-1, maxval=1))
        t_ours, imgs = ours(psp, A, stats, shot, n, opts, args.chunk)
        t_loop = official_loop(psp, A, stats, ns, shot, n, opts)
        g_only = generator_throughput(psp.decoder, args.chunk)
        row = {"size": size, "images": n, "ours_images_per_s": n / t_ours, "loop_images_per_s": n / t_loop,
               "ratio": t_loop / t_ours, "generator_only_images_per_s": g_only,
               "ours_seconds": t_ours, "loop_seconds": t_loop}
        results["sage_generation"].append(row)
        print(f"{size:>5} {n:>6} {row['ours_images_per_s']:>11.2f} {row['loop_images_per_s']:>11.2f} "
              f"{row['ratio']:>6.1f}x {g_only:>13.2f}")
        assert imgs.shape[0] == n and np.isfinite(imgs).all()
    if args.train:
        rows = []
        for c in args.train:
            rows.append(training_speed(c, TRAIN_STEPS[c]))
            print(json.dumps(rows[-1]), flush=True)
        if args.train_devices:
            import subprocess

            env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={args.train_devices}")
            for c in args.train:
                code = ("import json, sys; sys.path.insert(0, %r); from benchmark import training_speed; "
                        "print(json.dumps(training_speed(%r, %d)))"
                        % (os.path.dirname(os.path.abspath(__file__)), c, TRAIN_STEPS[c]))
                out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"the {args.train_devices}-device {c} training benchmark failed:\n{out.stderr[-4000:]}")
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
        results["training"] = rows
        _training_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
