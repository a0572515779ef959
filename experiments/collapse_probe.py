"""Where does a collapsed GAN lose its diversity: in the mapping network or in the
synthesis network? For a trained generator (a ``g_ema`` folder or a model directory's
generator), 256 random z:

    python experiments/collapse_probe.py runs/adv/base/g_ema

prints how much w varies across z (the mean per-dimension standard deviation over the
mean |w|: about 1 when z moves w as much as w's own size), how that spread lies (the
share of its variance in the top principal directions), and how much the images vary
across z (the mean over pixels of the standard deviation across samples, images in
[-1, 1]) beside the same for the w spread widened five times about its mean. A mapping
that has collapsed gives a small w spread; a synthesis network that has learnt to ignore
its styles gives a normal w spread but small image spread that widening w brings back.
A class-conditional generator gets a random class for each z.
"""

import argparse
import sys


def probe(g_dir: str, n: int = 256, seed: int = 1, widen: float = 5.0) -> dict:
    import jax
    import numpy as np

    from sage_jax.checkpoints import load_generator

    G = load_generator(g_dir)
    z = jax.random.normal(jax.random.PRNGKey(seed), (n, G.style_dim))
    labels = None
    if G.c_dim:   # a class-conditional generator (the reconstruction recipe's): random classes
        labels = np.asarray(jax.random.randint(jax.random.PRNGKey(seed + 1), (n,), 0, G.c_dim))
    w = np.asarray(G.mapping(z, labels=labels), np.float64)
    centred = w - w.mean(0)
    s = np.linalg.svd(centred, compute_uv=False) ** 2
    wide = w.mean(0) + centred * widen
    return {"w_spread": float(w.std(0).mean() / (np.abs(w.mean(0)).mean() + 1e-12)),
            "w_top5_share": [float(x) for x in s[:5] / s.sum()],
            "image_spread": float(np.asarray(G(w, input_is_latent=True)).std(0).mean()),
            "image_spread_widened": float(np.asarray(G(wide, input_is_latent=True)).std(0).mean()),
            "widen": widen, "n": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("generator", help="a g_ema folder (train-gan, gan_experiment.py) or a generator checkpoint")
    p.add_argument("--n", type=int, default=256, help="random z drawn")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    if a.n < 2:
        p.error("--n must be at least 2")
    r = probe(a.generator, a.n, a.seed)
    print(f"w spread (std across z / mean |w|): {r['w_spread']:.3f}; top-5 principal shares "
          + " ".join(f"{x:.3f}" for x in r["w_top5_share"]))
    print(f"image spread across z: {r['image_spread']:.4f}; with the w spread widened {r['widen']:g}x: "
          f"{r['image_spread_widened']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
