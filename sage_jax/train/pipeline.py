"""The whole pipeline in one command (``sage-jax train``): StyleGAN2, then the pSp
encoder, then the class statistics, then the dictionary (and, on the synthetic data,
the two ground-truth oracles), then one self-contained model directory.

Every stage writes into its own sub-directory of the workdir and is skipped when its
result exists, and each training stage resumes from its checkpoints, so running the
command again after an interruption continues where it stopped. A stage that runs
again (e.g. more GAN steps asked) makes every later stage start afresh from it.

    WORKDIR/gan/          train-gan          -> gan/g_ema
    WORKDIR/psp/          train-encoder      -> psp/psp
    WORKDIR/stats.npz     embed (class embeddings)
    WORKDIR/dictionary/   train-dictionary   -> dictionary/dictionary, dictionary/class_stats.npz
    WORKDIR/oracles/      classifier + factor regressor (synthetic data only)
    WORKDIR/model/        everything generation and the demo need, with the config

The class statistics are made from the encoder's codes, or from codes refined by
optimisation when the config has ``inversion.refine_steps`` > 0 (and
``inversion.refine_lr``; see :mod:`sage_jax.inversion`). The setting is recorded in the
statistics and in ``config.json``; changing it redoes the statistics and the dictionary.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np


def _stage(name: str, quiet: bool):
    if not quiet:
        print(f"== {name}", flush=True)


def train_pipeline(cfg, workdir: str, quiet: bool = False) -> str:
    from sage_jax import checkpoints
    from sage_jax.data.loader import seen_dataset
    from sage_jax.statistics import ClassStatistics, add_code_moments, compute_class_statistics
    from sage_jax.train.dictionary import train_dictionary
    from sage_jax.train.encoder import train_encoder
    from sage_jax.train.gan import train_gan

    from sage_jax.inversion import Inverter

    setting = inversion_setting(cfg)   # refused here, before any work, when impossible
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    times = _load_times(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(_config_json(cfg, setting))

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        _save_times(workdir, times)
        return out

    # A stage that (re)runs invalidates every later one: their results are removed and
    # rebuilt from the new upstream model.
    changed = False

    def invalidate(*paths):
        for p in paths:
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)

    g_dir = os.path.join(workdir, "gan", "g_ema")
    if not os.path.isdir(g_dir) or _needs_more(os.path.join(workdir, "gan"), cfg.gan.steps):
        _stage("1/5 StyleGAN2", quiet)
        changed = True
        data = seen_dataset(cfg.data, cfg.model.generator.size)
        timed("gan", lambda: train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data,
                                       os.path.join(workdir, "gan"), quiet=quiet))
    G = checkpoints.load_generator(g_dir)

    psp_dir = os.path.join(workdir, "psp", "psp")
    if changed:
        invalidate(os.path.join(workdir, "psp"))
    if not os.path.isdir(psp_dir) or _needs_more(os.path.join(workdir, "psp"), cfg.psp.steps):
        _stage("2/5 pSp encoder", quiet)
        changed = True
        data = seen_dataset(cfg.data, cfg.model.encoder.input_size)
        timed("encoder", lambda: train_encoder(cfg.model.encoder, G, cfg.psp, data,
                                               os.path.join(workdir, "psp"), quiet=quiet))
    psp = checkpoints.load_psp(psp_dir)

    enc_data = seen_dataset(cfg.data, cfg.model.encoder.input_size)
    inverter = Inverter(psp, setting)
    stats_path = os.path.join(workdir, "stats.npz")
    if not changed and os.path.exists(stats_path) and ClassStatistics.load(stats_path).inversion != setting:
        changed = True   # another inversion setting: the statistics and the dictionary are redone
    if changed:
        invalidate(stats_path)
    if not os.path.exists(stats_path):
        _stage("3/5 class embeddings" + (f" ({setting.describe()})" if setting.refines else ""), quiet)
        timed("embed", lambda: compute_class_statistics(inverter, enc_data, 64, quiet=quiet).save(stats_path))
    stats = ClassStatistics.load(stats_path)

    dict_dir = os.path.join(workdir, "dictionary")
    full_stats = os.path.join(dict_dir, "class_stats.npz")
    if changed:
        invalidate(dict_dir)
    if not os.path.exists(full_stats) or _needs_more(dict_dir, cfg.dictionary.steps):
        _stage("4/5 dictionary", quiet)

        def dictionary_stage():
            d = train_dictionary(psp, stats, enc_data, cfg.dictionary, dict_dir, quiet=quiet)
            add_code_moments(stats, inverter, enc_data, d, 64, quiet=quiet).save(full_stats)

        timed("dictionary", dictionary_stage)

    oracle_dir = os.path.join(workdir, "oracles")
    if cfg.data.name == "synthetic" and not os.path.exists(os.path.join(oracle_dir, "oracles.json")):
        _stage("5/5 ground-truth oracles", quiet)
        timed("oracles", lambda: _train_synthetic_oracles(cfg, oracle_dir, quiet))

    model_dir = os.path.join(workdir, "model")
    _bundle(cfg, workdir, model_dir, times, setting)
    if not quiet:
        total = sum(times.values())
        print(f"model in {model_dir} ({_du(model_dir) / 2**20:.1f} MB); stage times: "
              + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()) + f"; total {total / 60:.1f} min")
    return model_dir


def _needs_more(stage_dir: str, steps: int) -> bool:
    """True when the stage's checkpoints stop before ``steps`` (a longer run asked)."""
    ck = os.path.join(stage_dir, "checkpoints")
    if not os.path.isdir(ck):
        return True
    done = [int(d) for d in os.listdir(ck) if d.isdigit()]
    return not done or max(done) < steps


def _train_synthetic_oracles(cfg, out_dir, quiet):
    from sage_jax.data.loader import synthetic_spec
    from sage_jax.data.synthetic import FACTOR_NAMES, generate
    from sage_jax.metrics.oracles import train_oracles

    d = generate(synthetic_spec(cfg.data), "all")
    o = train_oracles(d["images"], d["labels"], d["factors"], d["factor_mask"], d["class_names"],
                      list(FACTOR_NAMES), key=jax.random.PRNGKey(cfg.seed + 17),
                      steps=cfg.oracles.steps, batch=cfg.oracles.batch_size, quiet=quiet)
    o.save(out_dir)


def inversion_setting(cfg):
    """The config's ``inversion`` section (optional: missing keys are the encoder's
    codes, refine_steps 0) as an InversionSetting; impossible values are a ValueError."""
    from sage_jax.inversion import InversionSetting

    section = cfg.get("inversion", None) or {}
    section = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    try:
        return InversionSetting.from_dict(section)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config 'inversion' section: {e}") from None


def _config_json(cfg, setting) -> str:
    """The config as JSON, with the inversion setting used filled in."""
    d = json.loads(cfg.to_json_best_effort())
    d["inversion"] = {"refine_steps": setting.refine_steps, "refine_lr": setting.refine_lr, "lpips": setting.lpips}
    return json.dumps(d, indent=1)


def _bundle(cfg, workdir, model_dir, times, setting):
    """Copy what generation and the demo need into one directory."""
    tmp = model_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shutil.copytree(os.path.join(workdir, "psp", "psp"), os.path.join(tmp, "psp"))
    shutil.copytree(os.path.join(workdir, "dictionary", "dictionary"), os.path.join(tmp, "dictionary"))
    shutil.copy(os.path.join(workdir, "dictionary", "class_stats.npz"), os.path.join(tmp, "class_stats.npz"))
    if os.path.isdir(os.path.join(workdir, "oracles")):
        shutil.copytree(os.path.join(workdir, "oracles"), os.path.join(tmp, "oracles"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        f.write(_config_json(cfg, setting))
    with open(os.path.join(tmp, "provenance.json"), "w") as f:
        json.dump({"made_by": "sage-jax train", "seed": int(cfg.seed), "stage_seconds": times,
                   "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}, f, indent=1)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp, model_dir)


def _du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _load_times(workdir):
    p = os.path.join(workdir, "stage_seconds.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def _save_times(workdir, times):
    with open(os.path.join(workdir, "stage_seconds.json"), "w") as f:
        json.dump(times, f, indent=1)
