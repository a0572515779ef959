"""One StyleGAN2 run of the pipeline's GAN stage, judged by existing oracles: the quick
loop for finding a tiny-model GAN setting, without the 11 minutes of oracle
training that ``sage-jax train`` spends first.

    python experiments/gan_experiment.py --workdir runs/gan_exp/r1 --config.gan.recipe=adversarial \\
        --config.gan.steps=4000 --config.gan.eval_every=500 --config.gan.r1=0.1 \\
        --config.gan.path_regularize=0 --config.gan.mixing=0 --config.gan.ema_rampup=0.05

Every ``gan.eval_every`` steps it prints and logs (``WORKDIR/metrics.jsonl``) the
generator's stage measures on ``--samples`` random samples of the EMA generator
(confident share, seen classes hit, oracle FID; :mod:`sage_jax.metrics.stages`) and
writes ``WORKDIR/eval_STEP.png``, 64 samples of fixed z, so runs compare picture by
picture. ``--oracles`` defaults to the shipped model's (trained on the tiny config's
synthetic data); on the glyphs (``--config glyphs``) give glyph oracles (a glyph model's
``oracles``), which judge samples against the held-out typefaces' seen letters. Two runs side by side on a 2-core
machine: ``taskset -c 0 ...`` and ``taskset -c 1 ...`` with
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``.
"""

import argparse
import json
import os
import sys
import time

def main(argv=None) -> int:
    from sage_jax.config import parse_with_config
    from sage_jax.demo import ASSET_DIR

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="run directory (resumable)")
    p.add_argument("--oracles", default=os.path.join(ASSET_DIR, "oracles"), help="oracle directory")
    p.add_argument("--samples", type=int, default=500, help="random samples scored at each evaluation")
    a, cfg = parse_with_config(p, sys.argv[1:] if argv is None else argv)
    if a.samples < 10:
        p.error("--samples must be at least 10")
    if not os.path.exists(os.path.join(a.oracles, "oracles.json")):
        p.error(f"{a.oracles} holds no oracles (oracles.json); give --oracles")

    import jax
    import numpy as np

    from sage_jax.data.loader import seen_dataset
    from sage_jax.images import make_grid, save_png, to_uint8
    from sage_jax.train.gan import train_gan
    from sage_jax.pipeline import _GlyphStageJudge, _StageJudge

    judges = {"synthetic": _StageJudge, "glyphs": _GlyphStageJudge}
    if cfg.data.name not in judges:
        p.error("oracles judge the synthetic data and the glyphs only (data.name=synthetic or glyphs)")
    cfg.quality.samples = a.samples
    judge = judges[cfg.data.name](cfg, a.oracles)
    os.makedirs(a.workdir, exist_ok=True)
    with open(os.path.join(a.workdir, "config.json"), "w") as f:
        f.write(cfg.to_json(indent=1))
    z = jax.random.normal(jax.random.PRNGKey(9), (64, int(cfg.model.generator.style_dim)))
    t0 = time.perf_counter()

    def evaluate(G, step):
        q = judge.generator(G, intervals=False)  # a learning-curve point: numbers only
        labels = (np.arange(64) % G.c_dim) if G.c_dim else None
        save_png(os.path.join(a.workdir, f"eval_{step:06d}.png"),
                 make_grid(to_uint8(np.asarray(G(z, labels=labels))), ncols=16))
        print(f"[{time.perf_counter() - t0:.0f} s] step {step}: confident share {q['confident_share']:.3f}, "
              f"seen classes hit {q['seen_classes_hit']}/{q['seen_classes']}, oracle FID {q['oracle_fid']:.1f}"
              + (f", asked class drawn {q['label_agreement']:.3f}" if "label_agreement" in q else ""),
              flush=True)
        return {f"quality/{k}": v for k, v in q.items() if k not in ("samples", "seen_classes")}

    data = seen_dataset(cfg.data, cfg.model.generator.size)
    train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, a.workdir, quiet=True, evaluate=evaluate)
    rows = [json.loads(line) for line in open(os.path.join(a.workdir, "metrics.jsonl"))]
    curve = [{"step": r["step"], **{k.split("/")[1]: v for k, v in r.items() if k.startswith("quality/")}}
             for r in rows if "quality/confident_share" in r]
    with open(os.path.join(a.workdir, "curve.json"), "w") as f:
        json.dump(curve, f, indent=1)
    print(f"done in {time.perf_counter() - t0:.0f} s; learning curve in {os.path.join(a.workdir, 'curve.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
