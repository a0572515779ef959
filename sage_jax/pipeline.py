"""The whole pipeline in one command (``sage-jax train``): on the synthetic data the two
ground-truth oracles first, then StyleGAN2, then the pSp encoder, then the class
statistics, then the dictionary, then one self-contained model directory.

Every stage writes into its own sub-directory of the workdir and is skipped when its
result exists, and each training stage resumes from its checkpoints, so running the
command again after an interruption continues where it stopped. A stage that runs
again (e.g. more GAN steps asked) makes every later stage start afresh from it.

    WORKDIR/oracles/      classifier + factor regressor (synthetic data), glyph oracles (glyphs)
    WORKDIR/gan/          train-gan          -> gan/g_ema
    WORKDIR/psp/          train-encoder      -> psp/psp
    WORKDIR/stats.npz     embed (class embeddings; stats_sample.json: of how many images per class)
    WORKDIR/dictionary/   train-dictionary   -> dictionary/dictionary, dictionary/class_stats.npz
    WORKDIR/model/        everything generation and the demo need, with the config (glyphs: and
                          heldout_unseen.npz, 40 held-out faces of each unseen letter)

On the synthetic data and on the font glyphs (``data.name=glyphs``) every stage is
measured on its own with the oracles (:mod:`sage_jax.metrics.stages`; for glyphs the
glyph oracles of :mod:`sage_jax.metrics.glyph_oracles`, trained on the training typefaces
and measuring on the held-out ones): the generator's learning curve (confident share of
random samples every ``gan.eval_every`` steps) in ``gan/metrics.jsonl``, its final sample
quality and the inversion's quality on held-out real images (seen and unseen classes) in
``WORKDIR/quality.json``, the last line of the stage's ``metrics.jsonl``, and the model's
``provenance.json``.

The class statistics are made from the encoder's codes, or from codes refined by
optimisation when the config has ``inversion.refine_steps`` > 0 (and
``inversion.refine_lr``; see :mod:`sage_jax.inversion`). The setting is recorded in the
statistics and in ``config.json``; changing it redoes the statistics and the dictionary.
``statistics.samples_per_class`` (> 0) makes the statistics of that many images per
class instead of all of them (each refined once: the embeddings and the moments share
the codes, :class:`~sage_jax.inversion.CachedInverter`).

Several processes (``sage-jax launch``, ``srun``): every stage trains data-parallel over
every device of every process, and every process computes the stage measures alike;
process 0 alone writes this module's files (``config.json``, ``quality.json``, the stage
times, the bundle) and removes invalidated results, the others waiting at a barrier
before they read them.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np

from sage_jax import parallel


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

    from sage_jax.inversion import CachedInverter, Inverter

    setting = inversion_setting(cfg)   # refused here, before any work, when impossible
    workdir = os.path.abspath(workdir)
    main = parallel.is_main()
    if main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(_config_json(cfg, setting))
    parallel.barrier("pipeline-start")
    times = _load_times(workdir)

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
        if main:
            for p in paths:
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.remove(p)
        parallel.barrier("pipeline-invalidate")

    measured = cfg.data.name in ("synthetic", "glyphs")   # the datasets with ground-truth oracles
    glyphs = cfg.data.name == "glyphs"
    oracle_dir = os.path.join(workdir, "oracles")
    if measured and not os.path.exists(os.path.join(oracle_dir, "oracles.json")):
        _stage("1/6 ground-truth oracles" + (" (glyph classes and attributes)" if glyphs else ""), quiet)
        train_oracles = _train_glyph_oracles if glyphs else _train_synthetic_oracles
        timed("oracles", lambda: train_oracles(cfg, oracle_dir, quiet))
    judge = (_GlyphStageJudge if glyphs else _StageJudge)(cfg, oracle_dir) if measured else None
    quality = _load_json(os.path.join(workdir, "quality.json"))

    def record(stage, measures, stage_dir, step):
        quality[stage] = measures
        if main:
            _save_json(os.path.join(workdir, "quality.json"), quality)
        _log_quality(stage_dir, step, stage, measures)
        if not quiet:
            print(f"   {stage}: " + _describe(measures), flush=True)

    g_dir = os.path.join(workdir, "gan", "g_ema")
    if not _saved(g_dir, "model.json") or _needs_more(os.path.join(workdir, "gan"), cfg.gan.steps):
        _stage("2/6 StyleGAN2", quiet)
        changed = True
        quality.clear()
        data = seen_dataset(cfg.data, cfg.model.generator.size)
        curve = judge.learning_curve if judge is not None else None
        timed("gan", lambda: train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data,
                                       os.path.join(workdir, "gan"), quiet=quiet, evaluate=curve,
                                       hflip=bool(cfg.data.get("hflip", False))))
    G = checkpoints.load_generator(g_dir)
    if judge is not None and "generator" not in quality:
        record("generator", judge.generator(G), os.path.join(workdir, "gan"), int(cfg.gan.steps))

    psp_dir = os.path.join(workdir, "psp", "psp")
    if changed:
        invalidate(os.path.join(workdir, "psp"))
    if not _saved(psp_dir, "psp.json") or _needs_more(os.path.join(workdir, "psp"), cfg.psp.steps):
        _stage("3/6 pSp encoder", quiet)
        changed = True
        quality.pop("inversion", None)
        data = seen_dataset(cfg.data, cfg.model.encoder.input_size)
        timed("encoder", lambda: train_encoder(cfg.model.encoder, G, cfg.psp, data,
                                               os.path.join(workdir, "psp"), quiet=quiet))
    psp = checkpoints.load_psp(psp_dir)
    inverter = Inverter(psp, setting)
    if judge is not None and quality.get("inversion", {}).get("setting") != setting.describe():
        record("inversion", judge.inversion(psp, inverter), os.path.join(workdir, "psp"), int(cfg.psp.steps))

    enc_data = seen_dataset(cfg.data, cfg.model.encoder.input_size)
    stats_data, per_class = statistics_data(cfg, enc_data)
    # refined codes are costly: the embeddings, the dictionary and the moments share them (one per image)
    codes = CachedInverter(inverter) if setting.refines else inverter
    stats_path = os.path.join(workdir, "stats.npz")
    sample_path = os.path.join(workdir, "stats_sample.json")
    if not changed and os.path.exists(stats_path) and (
            ClassStatistics.load(stats_path).inversion != setting
            or _load_json(sample_path).get("samples_per_class", 0) != per_class):
        changed = True   # another inversion setting or sample: the statistics and the dictionary are redone
    if changed:
        invalidate(stats_path)
    if not os.path.exists(stats_path):
        _stage("4/6 class embeddings" + (f" ({setting.describe()})" if setting.refines else ""), quiet)
        timed("embed", lambda: compute_class_statistics(codes, stats_data, 64, quiet=quiet).save(stats_path))
        if main:
            _save_json(sample_path, {"samples_per_class": per_class})
    stats = ClassStatistics.load(stats_path)

    dict_dir = os.path.join(workdir, "dictionary")
    full_stats = os.path.join(dict_dir, "class_stats.npz")
    if changed:
        invalidate(dict_dir)
    if not os.path.exists(full_stats) or _needs_more(dict_dir, cfg.dictionary.steps):
        _stage("5/6 dictionary", quiet)

        def dictionary_stage():
            # on the codes the statistics are made of: refined codes of the statistics' images
            # (each refined once, shared with the moments), or the encoder's of every image
            if setting.refines:
                d = train_dictionary(psp, stats, stats_data, cfg.dictionary, dict_dir, quiet=quiet, codes=codes)
            else:
                d = train_dictionary(psp, stats, enc_data, cfg.dictionary, dict_dir, quiet=quiet)
            add_code_moments(stats, codes, stats_data, d, 64, quiet=quiet).save(full_stats)

        timed("dictionary", dictionary_stage)
        quality.pop("dictionary", None)
    if "dictionary" not in quality:
        record("dictionary", _dictionary_measure(checkpoints.load_dictionary(os.path.join(dict_dir, "dictionary")),
                                                 ClassStatistics.load(full_stats), codes, stats_data),
               dict_dir, int(cfg.dictionary.steps))

    model_dir = os.path.join(workdir, "model")
    if main:
        _bundle(cfg, workdir, model_dir, times, setting, quality, class_names=list(enc_data.class_names))
    parallel.barrier("pipeline-bundle")
    # said even when quiet: where the model went
    total = sum(times.values())
    print(f"model in {model_dir} ({_du(model_dir) / 2**20:.1f} MB); stage times: "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()) + f"; total {total / 60:.1f} min")
    return model_dir


def _dictionary_measure(dictionary, stats, encode, data) -> dict:
    """The dictionary's stage measure (:func:`~sage_jax.metrics.stages.dictionary_quality`)
    on the codes of the statistics' images, made as the statistics' were."""
    from sage_jax.metrics.stages import dictionary_quality

    ws, ys = [], []
    for imgs, labels in data.batches(64):
        keep = np.asarray(labels) >= 0
        ws.append(np.asarray(encode(imgs))[keep])
        ys.append(np.asarray(labels)[keep])
    return dictionary_quality(dictionary.A, dictionary.edited_layers, np.concatenate(ws), np.concatenate(ys),
                              stats.embeddings)


def _saved(path: str, descriptor: str) -> bool:
    """Whether a saved model is at ``path``: its descriptor file (a save interrupted
    before its first commit leaves the directory without one)."""
    return os.path.isfile(os.path.join(path, descriptor))


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
    if parallel.is_main():
        o.save(out_dir)
    parallel.barrier("oracles-saved")


def glyph_split(cfg, split: str):
    """Every class's glyphs of ``split`` ("train" or "heldout" faces) of the config's
    glyph dataset (folder or TFDS build) as :class:`~sage_jax.metrics.glyph_oracles.GlyphData`."""
    from sage_jax.data.loader import glyph_dataset
    from sage_jax.metrics.glyph_oracles import glyph_data

    return glyph_data(glyph_dataset(cfg.data, split, "all"))


def _train_glyph_oracles(cfg, out_dir, quiet):
    from sage_jax.metrics.glyph_oracles import train_glyph_oracles

    o = train_glyph_oracles(glyph_split(cfg, "train"), key=jax.random.PRNGKey(cfg.seed + 17),
                            steps=int(cfg.oracles.steps), batch=int(cfg.oracles.batch_size),
                            heldout=glyph_split(cfg, "heldout"), quiet=quiet)
    if parallel.is_main():
        o.save(out_dir)
    parallel.barrier("oracles-saved")
    if not quiet:
        sc = o.scores
        print(f"   oracles on held-out typefaces: character accuracy {sc['accuracy']['overall']['value']:.3f}", flush=True)


def statistics_data(cfg, dataset):
    """(the images the class statistics are made of, images per class): every training
    image (0), or the first ``statistics.samples_per_class`` of each class when the config
    sets it (> 0; refined codes cost an optimisation per image, and a class's mean and
    moments settle long before its hundreds of images)."""
    from sage_jax.data.loader import PerClassSubset

    n = int(cfg.statistics.samples_per_class)
    if n < 0:
        raise ValueError(f"statistics.samples_per_class must be >= 0 (0: every image), got {n}")
    return (PerClassSubset(dataset, n) if n else dataset), n


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


def _bundle(cfg, workdir, model_dir, times, setting, quality=None, class_names=None):
    """Copy what generation and the demo need into one directory (process 0 only), with
    ``classes.json``, the seen classes' names in label order
    (:func:`sage_jax.statistics.write_class_names`). The copy is made under a temporary
    name and put in place at the end; a previous bundle is moved aside first and removed
    last."""
    from sage_jax.statistics import write_class_names

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
    if class_names is not None:
        write_class_names(tmp, class_names)
    if cfg.get("data", {}).get("name") == "glyphs":   # held-out images of the unseen letters: the demo needs no fonts
        from sage_jax.glyph_demo import bundle_heldout_letters

        bundle_heldout_letters(cfg.data, tmp, key=jax.random.PRNGKey(int(cfg.seed)))
    with open(os.path.join(tmp, "provenance.json"), "w") as f:
        json.dump({"made_by": "sage-jax train", "seed": int(cfg.seed), "stage_seconds": times,
                   "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
                   "processes": jax.process_count(),
                   "stage_quality": quality or {}}, f, indent=1)
    old = model_dir + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(model_dir):
        os.replace(model_dir, old)
    os.replace(tmp, model_dir)
    shutil.rmtree(old, ignore_errors=True)


def _du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


class _StageJudge:
    """The oracles' measures of each stage on the synthetic data (fixed keys and fresh
    held-out draws, so the figures of two runs compare)."""

    def __init__(self, cfg, oracle_dir):
        from sage_jax.data.loader import synthetic_spec
        from sage_jax.data.synthetic import generate, make_classes
        from sage_jax.metrics.oracles import Oracles

        self.cfg = cfg
        self.oracles = Oracles.load(oracle_dir)
        self.size = int(cfg.data.size)   # the oracles' input size (they train on cfg.data)
        self.spec = synthetic_spec(cfg.data, cfg.model.encoder.input_size)
        classes = make_classes(self.spec)
        self.seen = [c for c in classes if c.seen]
        self.unseen = [c for c in classes if not c.seen]
        self.seen_names = [c.name for c in self.seen]
        self.n_samples = int(cfg.quality.samples)
        real = generate(synthetic_spec(cfg.data), "seen")["images"]
        self.real_seen = real[np.asarray(jax.random.permutation(jax.random.PRNGKey(3), len(real)))[:self.n_samples]]
        self.key = jax.random.PRNGKey(int(cfg.quality.seed))

    def generator(self, G, intervals: bool = True):
        from sage_jax.metrics.stages import generator_quality

        return generator_quality(G, self.oracles, self.seen_names, self.key, n=self.n_samples,
                                 real_seen=self.real_seen, size=self.size, intervals=intervals)

    def learning_curve(self, G, step):
        """A point of the learning curve: numbers only (they go to ``metrics.jsonl``)."""
        return {f"quality/{k}": v for k, v in self.generator(G, intervals=False).items()
                if k not in ("samples", "seen_classes")}

    def inversion(self, psp, inverter):
        """The inversion the class statistics use (``inverter``: the encoder, refined as
        the config's ``inversion`` section says), on held-out seen and unseen images."""
        from sage_jax.metrics.stages import heldout_images, inversion_quality

        per_class = int(self.cfg.quality.heldout_per_class)

        def reconstruct(x):
            return psp.decoder(psp.absolute_codes(inverter(x)), input_is_latent=True)

        out = {"setting": inverter.setting.describe()}
        for split, classes in (("seen", self.seen), ("unseen", self.unseen)):
            images, idx = heldout_images(self.spec, classes, per_class)
            names = [c.name for c in classes for _ in range(per_class)]
            out[split] = inversion_quality(reconstruct, self.oracles, images, names, size=self.size)
        return out


class _GlyphStageJudge(_StageJudge):
    """The glyph oracles' measures of each stage (as :class:`_StageJudge`'s), on the
    held-out typefaces: random samples against real held-out seen letters, and the
    inversion of ``quality.heldout_per_class`` held-out faces' images of every seen and
    every unseen letter. Each figure comes with the real images' own (``real_*``,
    ``input_retention``): some letters are ambiguous in some faces."""

    def __init__(self, cfg, oracle_dir):
        from sage_jax.data.loader import heldout_dataset
        from sage_jax.metrics.glyph_oracles import GlyphOracles

        self.cfg = cfg
        self.oracles = GlyphOracles.load(oracle_dir)
        self.size = None   # the glyph oracles resize themselves
        self.n_samples = int(cfg.quality.samples)
        self.key = jax.random.PRNGKey(int(cfg.quality.seed))
        self.held = {split: heldout_dataset(cfg.data, split) for split in ("seen", "unseen")}
        seen = self.held["seen"]
        self.seen_names = list(seen.class_names)
        pick = np.sort(np.asarray(jax.random.permutation(jax.random.PRNGKey(3), len(seen)))[:self.n_samples])
        self.real_seen = seen.load_batch(pick)[0]

    def generator(self, G, intervals: bool = True):
        from sage_jax.metrics.stages import sample_quality

        out = super().generator(G, intervals)
        real = sample_quality(self.oracles, self.real_seen, self.seen_names, intervals=False)
        out["real_confident_share"] = real["confident_share"]
        out["real_seen_classes_hit"] = real["seen_classes_hit"]
        return out

    def inversion(self, psp, inverter):
        from sage_jax.metrics.stages import inversion_quality

        per_class = int(self.cfg.quality.heldout_per_class)

        def reconstruct(x):
            return psp.decoder(psp.absolute_codes(inverter(x)), input_is_latent=True)

        out = {"setting": inverter.setting.describe()}
        for split, ds in self.held.items():
            images, labels = ds.per_class(per_class, seed=int(self.cfg.quality.seed))
            names = [ds.class_names[i] for i in labels]
            out[split] = inversion_quality(reconstruct, self.oracles, images, names)
        return out


def _flat(measures, prefix=""):
    out = {}
    for k, v in measures.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):
            out[prefix + k] = v
    return out


def _describe(measures) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in _flat(measures).items())


def _log_quality(stage_dir, step, stage, measures):
    """Append the stage's final measures to its ``metrics.jsonl`` (and TensorBoard)."""
    from sage_jax.train.common import MetricsLog

    if not os.path.isdir(stage_dir):
        return
    log = MetricsLog(stage_dir, start_step=step)
    try:
        log.write(step, {f"final/{stage}/{k}": v for k, v in _flat(measures).items()})
    finally:
        log.close()


def _load_json(path):
    return json.load(open(path)) if os.path.exists(path) else {}


def _save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _load_times(workdir):
    p = os.path.join(workdir, "stage_seconds.json")
    return json.load(open(p)) if os.path.exists(p) else {}


def _save_times(workdir, times):
    if not parallel.is_main():
        return
    with open(os.path.join(workdir, "stage_seconds.json"), "w") as f:
        json.dump(times, f, indent=1)
