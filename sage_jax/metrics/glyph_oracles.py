"""Oracles for the font-glyph dataset (:mod:`sage_jax.data.glyphs`): what a generated
glyph keeps of its character and how much it varies the face's attributes.

One small network (:class:`sage_jax.nn.classifier.SmallCNN`, the synthetic oracles'
network) with several heads, trained by the synthetic oracles' loop
(:func:`sage_jax.train.classifier.fit_small_classifier`) on the real glyphs of the
**training families** only, with small random shifts and scalings (so a generated glyph a
little off-centre or off-size is still read):

* a **character classifier** over all classes, seen (Latin, digits) and unseen (Greek,
  Cyrillic);
* **attribute heads**: weight (usWeightClass / 100, a regression), width (usWidthClass,
  a regression), italic and monospace (binary), serif category (4-way, the dataset's
  ``SERIF_CATEGORIES``).

Their scores on the **held-out families** (typefaces never trained on) are kept with them
(``oracles.json``): character accuracy overall, seen, unseen and per class; the MAE of
weight and width (in class units) and the accuracy of italic, monospace and serif; each
with a 95% interval from a bootstrap over the held-out families (the images of one face,
and the faces of one family, are not independent trials).

Measures of generated images (images (N, H, W), (N, H, W, 1) or (N, H, W, 3) in
[-1, 1]; resized to the oracles' size and read as their channel mean, since the oracles
saw gray images repeated to 3 channels):

* **retention** (:meth:`GlyphOracles.retention`): the classifier's accuracy on images
  generated for one class (exact binomial interval);
* **attribute diversity** (:meth:`GlyphOracles.attribute_diversity`): the synthetic
  oracles' diversity (:mod:`sage_jax.metrics.oracles`) with the predicted attributes as
  the factors: per attribute the standard deviation of the predictions on generated
  images of a letter over that on real images of the same letter (1.0 = varies the
  attribute as much as the real faces do), and overall the ratio of the mean spread over
  the five attributes (each standardised by its spread over the training faces, serif's
  four probabilities counted as one attribute);
* :class:`GlyphJudge`: the oracles and the real held-out images of each target letter;
  for generated images per letter, retention and diversity with the class/image
  bootstrap of :class:`sage_jax.metrics.oracles.GroundTruthSets` (which it uses), the
  per-attribute diversity, and the real images' own retention per letter (some letters
  are ambiguous in some faces, so a letter's generated retention is read against it).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax import parallel
from sage_jax.nn.classifier import SmallCNN
from sage_jax.train.classifier import fit_small_classifier

ATTRIBUTES = ("weight", "width", "italic", "monospace", "serif")
SERIF_CATEGORIES = ("sans", "serif", "mono", "other")     # the dataset's serif ids, in order
N_ATTR_OUT = 1 + 1 + 1 + 1 + len(SERIF_CATEGORIES)        # network outputs after the class logits
# the diversity columns (predict_factors) of each attribute
ATTRIBUTE_COLUMNS = {"weight": [0], "width": [1], "italic": [2], "monospace": [3], "serif": [4, 5, 6, 7]}
PREDICT_BATCH = 512


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class GlyphData:
    """Glyph images with their labels, as read from a dataset folder's ``labels.csv``.

    ``images`` (N, S, S, 3) float32 in [-1, 1] (the gray glyph repeated, as the generator
    sees it); ``labels`` the class index; ``attributes`` {name: (N,)}: weight in
    usWeightClass / 100 (1-9), width (usWidthClass 1-9), italic and monospace (0/1),
    serif (index into ``SERIF_CATEGORIES``); ``split``, ``face``, ``family`` per image;
    ``class_names``, ``chars`` and ``seen`` per class."""

    images: np.ndarray
    labels: np.ndarray
    attributes: dict
    split: np.ndarray
    face: np.ndarray
    family: np.ndarray
    class_names: list
    chars: list
    seen: np.ndarray

    def __len__(self):
        return len(self.labels)

    def subset(self, mask) -> "GlyphData":
        m = np.asarray(mask)
        return dataclasses.replace(self, images=self.images[m], labels=self.labels[m],
                                   attributes={k: v[m] for k, v in self.attributes.items()},
                                   split=self.split[m], face=self.face[m], family=self.family[m])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def read_labels(root: str) -> list[dict]:
    """The rows of ``root/labels.csv`` with the numbers parsed: ``class_index``,
    ``seen``, ``face_index``, ``weight``, ``width``, ``italic``, ``monospace`` and
    ``serif`` as int, ``char`` from ``codepoint``."""
    ints = ("class_index", "seen", "face_index", "weight", "width", "italic", "monospace", "serif")
    with open(os.path.join(root, "labels.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ints:
            r[k] = int(r[k])
        r["char"] = chr(int(r["codepoint"].removeprefix("U+"), 16))
    return rows


def gray_to_input(gray) -> np.ndarray:
    """uint8 (N, S, S) white-on-black glyphs -> (N, S, S, 3) float32 in [-1, 1]."""
    x = np.asarray(gray, np.float32) / 127.5 - 1.0
    return np.repeat(x[..., None], 3, axis=-1)


def load_glyphs(root: str, split: str | None = None, classes=None) -> GlyphData:
    """The images of ``root`` listed in its ``labels.csv`` (``split``: "train" or
    "heldout", None both; ``classes``: the class names, characters or indices to keep,
    None all). The
    class table (names, characters, seen) always covers every class of the file."""
    from PIL import Image

    rows = read_labels(root)
    n_classes = max(r["class_index"] for r in rows) + 1
    names, chars, seen = [None] * n_classes, [None] * n_classes, np.zeros(n_classes, bool)
    for r in rows:
        names[r["class_index"]], chars[r["class_index"]] = r["class_name"], r["char"]
        seen[r["class_index"]] = bool(r["seen"])
    if classes is not None:
        keep = {int(c) if not isinstance(c, str) else names.index(c) if c in names else chars.index(c)
                for c in classes}
        rows = [r for r in rows if r["class_index"] in keep]
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    if not rows:
        raise ValueError(f"no images in {root} for split={split!r}, classes={classes!r}")
    gray = np.stack([np.asarray(Image.open(os.path.join(root, r["path"])).convert("L")) for r in rows])
    attrs = {"weight": np.asarray([r["weight"] / 100.0 for r in rows], np.float32),
             "width": np.asarray([r["width"] for r in rows], np.float32),
             **{k: np.asarray([r[k] for r in rows], np.int32) for k in ("italic", "monospace", "serif")}}
    return GlyphData(gray_to_input(gray), np.asarray([r["class_index"] for r in rows], np.int32), attrs,
                     np.asarray([r["split"] for r in rows]), np.asarray([r["face"] for r in rows]),
                     np.asarray([r["family"] for r in rows]), names, chars, seen)


def glyph_data(ds) -> GlyphData:
    """:class:`GlyphData` of a :class:`~sage_jax.data.glyph_data.GlyphDataset` loaded with
    every class (``classes="all"``; from a folder or a TFDS build), so that labels are
    class indices of the whole table."""
    if [c["index"] for c in ds.classes] != list(range(len(ds.classes))):
        raise ValueError("glyph_data needs the dataset with every class (classes='all')")
    a = ds.attributes()
    attrs = {"weight": (a["weight"] / 100.0).astype(np.float32), "width": a["width"].astype(np.float32),
             **{k: a[k].astype(np.int32) for k in ("italic", "monospace", "serif")}}
    faces = ds.faces
    return GlyphData(gray_to_input(ds.gray), np.asarray(ds.labels_array, np.int32), attrs,
                     np.asarray([faces[f]["split"] for f in ds.face_index]),
                     np.asarray([faces[f]["face"] for f in ds.face_index]),
                     np.asarray([faces[f]["family"] for f in ds.face_index]),
                     list(ds.class_names), [c["char"] for c in ds.classes],
                     np.asarray([bool(c["seen"]) for c in ds.classes]))


# --------------------------------------------------------------------------- augmentation
def shift_scale(key, x, shift: float, scale: float, background: float = -1.0):
    """Every image of ``x`` (N, S, S, C) moved by up to ``shift`` pixels along each axis
    and scaled by a factor in [1 - scale, 1 + scale] about its centre (bilinear; what
    comes in from outside is ``background``), independently per image."""
    n, h, w, _ = x.shape
    k_s, k_y, k_x = jax.random.split(key, 3)
    s = 1.0 + jax.random.uniform(k_s, (n,), minval=-scale, maxval=scale)
    dy = jax.random.uniform(k_y, (n,), minval=-shift, maxval=shift)
    dx = jax.random.uniform(k_x, (n,), minval=-shift, maxval=shift)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")

    def one(im, s, dy, dx):
        sy = (yy - cy - dy) / s + cy
        sx = (xx - cx - dx) / s + cx
        return jax.vmap(lambda ch: jax.scipy.ndimage.map_coordinates(ch, [sy, sx], order=1, mode="constant",
                                                                     cval=background),
                        in_axes=2, out_axes=2)(im)

    return jax.vmap(one)(x, s, dy, dx)


# --------------------------------------------------------------------------- the oracles
def network_input(x):
    """Images in [-1, 1] as the network reads them: ``(x + 1) / 2``, ink 1 on a
    background of 0. (On [-1, 1] the black background is a large constant input to the
    first convolution, which has no normalisation: training stalls near chance for
    longer; docs/glyph_oracles.md.)"""
    return (x + 1.0) * 0.5


def _attribute_scales(attributes) -> np.ndarray:
    """Per diversity column, 1 / (the attribute's spread over the training labels):
    weight and width their standard deviation, italic and monospace sqrt(p (1 - p)),
    serif the mean over categories of sqrt(p_k (1 - p_k)), times 1/4 so its four
    columns weigh as one attribute in the mean spread."""
    def sd(v):
        return max(float(np.std(v)), 1e-3)

    serif = np.eye(len(SERIF_CATEGORIES))[np.asarray(attributes["serif"])]
    serif_sd = max(float(np.mean(serif.std(axis=0))), 1e-3)
    return np.asarray([1 / sd(attributes["weight"]), 1 / sd(attributes["width"]), 1 / sd(attributes["italic"]),
                       1 / sd(attributes["monospace"])] + [0.25 / serif_sd] * len(SERIF_CATEGORIES), np.float32)


class GlyphOracles:
    """The trained multi-head network, its class table, attribute normalisation and
    held-out scores. ``meta``: ``size``, ``widths``, ``class_names``, ``chars``,
    ``seen``, ``targets`` (the mean and standard deviation the weight and width heads
    are standardised with), ``scales`` (the diversity columns' scales), ``training``."""

    def __init__(self, params, meta: dict, scores: dict | None = None):
        self.params = params
        self.meta = dict(meta)
        self.scores = dict(scores or {})
        self.class_names = list(meta["class_names"])
        self.chars = list(meta["chars"])
        self.seen = np.asarray(meta["seen"], bool)
        self.size = int(meta["size"])
        self.network = SmallCNN(len(self.class_names) + N_ATTR_OUT, tuple(meta["widths"]), pool=meta["pool"])
        self.scales = np.asarray(meta["scales"], np.float32)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ------------------------------------------------------------- reading images
    def prepare(self, images) -> np.ndarray:
        """``images`` as the oracles read them: (N, size, size, 3) float32, the channel
        mean repeated (the oracles saw gray glyphs), resized (bilinear) when needed."""
        x = np.asarray(images, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
        x = x.mean(axis=-1, keepdims=True)
        if x.shape[1] != self.size or x.shape[2] != self.size:
            x = np.asarray(jax.image.resize(x, (len(x), self.size, self.size, 1), "bilinear"))
        return np.repeat(x, 3, axis=-1)

    def _run(self, images, what="outputs") -> np.ndarray:
        from sage_jax.train.classifier import _batched   # padded to one batch shape: one compilation

        return _batched(self.network, self.params, network_input(self.prepare(images)), PREDICT_BATCH, what)

    def outputs(self, images) -> np.ndarray:
        """The raw network outputs (N, classes + 8)."""
        return self._run(images)

    def class_probabilities(self, images) -> np.ndarray:
        return np.asarray(jax.nn.softmax(self.outputs(images)[:, :self.num_classes], axis=-1))

    def predict_class(self, images) -> np.ndarray:
        return self.outputs(images)[:, :self.num_classes].argmax(-1)

    def features(self, images) -> np.ndarray:
        """The embedding the heads read (:meth:`SmallCNN.features`)."""
        return self._run(images, "features")

    def fid_features(self, images) -> np.ndarray:
        """The features the oracle FID compares (:func:`sage_jax.metrics.stages.oracle_fid`):
        the last feature map averaged over its positions, (N, widths[-1]). The flattened
        embedding the heads read has 16 times the dimensions (2,048 at 32 px): its
        covariance from a thousand images is singular, and each of the FID interval's
        200 bootstrap replicates would take a 2,048 x 2,048 matrix square root."""
        f = self.features(images)
        c = int(self.meta["widths"][-1])
        return f.reshape(len(f), -1, c).mean(axis=1) if self.meta.get("pool") == "flatten" else f

    def _attributes_from(self, out) -> dict:
        a = np.asarray(out[:, self.num_classes:], np.float64)   # float64: identical images, identical values
        t = self.meta["targets"]
        return {"weight": a[:, 0] * t["weight_std"] + t["weight_mean"],
                "width": a[:, 1] * t["width_std"] + t["width_mean"],
                "italic": np.asarray(jax.nn.sigmoid(a[:, 2])),
                "monospace": np.asarray(jax.nn.sigmoid(a[:, 3])),
                "serif": np.asarray(jax.nn.softmax(a[:, 4:], axis=-1))}

    def predict_attributes(self, images) -> dict:
        """{weight (usWeightClass / 100), width (usWidthClass), italic and monospace
        (probability of 1), serif ((N, 4) probabilities)}."""
        return self._attributes_from(self.outputs(images))

    def attribute_labels(self, images) -> dict:
        """The attributes as labels: weight and width (continuous), italic and monospace
        (0/1) and serif (category index)."""
        p = self.predict_attributes(images)
        return {"weight": p["weight"], "width": p["width"], "italic": (p["italic"] > 0.5).astype(np.int32),
                "monospace": (p["monospace"] > 0.5).astype(np.int32), "serif": p["serif"].argmax(-1)}

    def predict_factors(self, images) -> np.ndarray:
        """The attributes as the diversity's factor columns (N, 8): weight, width,
        P(italic), P(monospace), the four serif probabilities, each times its scale
        (:func:`_attribute_scales`); what :class:`~sage_jax.metrics.oracles.GroundTruthSets`
        takes the spread of."""
        return self._factors(self.predict_attributes(images))

    def _factors(self, p) -> np.ndarray:
        cols = np.concatenate([p["weight"][:, None], p["width"][:, None], p["italic"][:, None],
                               p["monospace"][:, None], p["serif"]], axis=1)
        return cols * self.scales.astype(np.float64)

    # ------------------------------------------------------------- measures
    def retention(self, images, class_index) -> dict:
        """The share of ``images`` the classifier assigns to ``class_index`` (an index
        or a class name), with its exact binomial interval: ``{"value", "lo", "hi"}``."""
        from sage_jax.metrics.uncertainty import binomial_interval

        c = self.class_names.index(class_index) if isinstance(class_index, str) else int(class_index)
        pred = self.predict_class(images)
        return binomial_interval(int(np.sum(pred == c)), len(pred))

    def attribute_diversity(self, generated, real, key=None, n_boot: int | None = None) -> dict:
        """How much ``generated`` images of a letter vary each attribute relative to
        ``real`` images of the same letter: ``{attribute: interval, "overall": interval}``,
        each the ratio of the spreads (:data:`ATTRIBUTE_COLUMNS`; "overall" all columns),
        with a bias-corrected bootstrap interval over both sets' images (``key``,
        default ``PRNGKey(0)``)."""
        from sage_jax.metrics import uncertainty as u

        key = jax.random.PRNGKey(0) if key is None else key
        n_boot = u.N_BOOT if n_boot is None else n_boot
        g, r = self.predict_factors(generated), self.predict_factors(real)
        boot = u.ClassBootstrap({"generated": [len(g)], "real": [len(r)]}, key, n_boot)
        out = {}
        for name, mask in [(a, ATTRIBUTE_COLUMNS[a]) for a in ATTRIBUTES] + [("overall", None)]:
            out[name] = boot.estimate(u.diversity_stat([g], [r], [mask]), bias_correct=True)
        return out

    # ------------------------------------------------------------- files
    def save(self, path: str) -> None:
        """``path/oracles.npz`` (the parameters) and ``path/oracles.json`` (the class
        table, normalisation and scores), as the synthetic oracles; process 0 only."""
        flat = {"/".join(str(getattr(p, "key", p)) for p in k): np.asarray(v)
                for k, v in jax.tree_util.tree_flatten_with_path(parallel.to_host(self.params))[0]}
        if parallel.is_main():
            os.makedirs(path, exist_ok=True)
            np.savez(os.path.join(path, "oracles.npz"), **flat)
            with open(os.path.join(path, "oracles.json"), "w", encoding="utf-8") as f:
                json.dump({"kind": "glyph-oracles", **self.meta, "scores": self.scores}, f, indent=1,
                          ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> "GlyphOracles":
        with open(os.path.join(path, "oracles.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.pop("kind", None) != "glyph-oracles":
            raise ValueError(f"{path}/oracles.json does not describe glyph oracles")
        scores = meta.pop("scores")
        params: dict = {}
        with np.load(os.path.join(path, "oracles.npz")) as data:
            for k in data.files:
                node = params
                *parts, leaf = k.split("/")
                for p in parts:
                    node = node.setdefault(p, {})
                node[leaf] = jnp.asarray(data[k])
        return cls(params, meta, scores)


# --------------------------------------------------------------------------- training
def _loss(n_classes: int, attr_weight: float):
    def loss(out, t):
        y = t[:, 0].astype(jnp.int32)
        a = out[:, n_classes:]
        ce = optax.softmax_cross_entropy_with_integer_labels(out[:, :n_classes], y).mean()
        reg = jnp.mean(jnp.square(a[:, 0] - t[:, 1])) + jnp.mean(jnp.square(a[:, 1] - t[:, 2]))
        binary = optax.sigmoid_binary_cross_entropy(a[:, 2:4], t[:, 3:5]).mean(axis=0).sum()
        serif = optax.softmax_cross_entropy_with_integer_labels(a[:, 4:], t[:, 5].astype(jnp.int32)).mean()
        return ce + attr_weight * (reg + binary + serif)

    return loss


def train_glyph_oracles(train: GlyphData, *, key, steps: int = 900, batch: int = 64, lr: float = 2e-3,
                        widths=(32, 64, 128), shift: float = 2.0, scale: float = 0.08,
                        pool: str = "flatten", attr_weight: float = 0.5, heldout: GlyphData | None = None,
                        n_boot: int | None = None, quiet: bool = True, mesh=None) -> GlyphOracles:
    """The oracles trained on ``train`` (the training families' glyphs) for ``steps``
    Adam steps of ``batch`` images, each shifted by up to ``shift`` pixels and scaled by
    up to ``scale`` (:func:`shift_scale`), read as :func:`network_input`, by a
    ``SmallCNN(widths, pool)`` (``pool="flatten"``: global pooling forgets where the
    strokes are and learns far slower, docs/glyph_oracles.md); the loss is the class
    cross-entropy plus ``attr_weight`` times the attribute losses (squared error of the
    standardised weight and width, binary cross-entropy of italic and monospace,
    cross-entropy of serif).
    With ``heldout`` the oracles' scores on it (:func:`heldout_scores`)."""
    n_classes = len(train.class_names)
    a = train.attributes
    targets = {"weight_mean": float(np.mean(a["weight"])), "weight_std": float(max(np.std(a["weight"]), 1e-3)),
               "width_mean": float(np.mean(a["width"])), "width_std": float(max(np.std(a["width"]), 1e-3))}
    t = np.stack([train.labels.astype(np.float32),
                  (a["weight"] - targets["weight_mean"]) / targets["weight_std"],
                  (a["width"] - targets["width_mean"]) / targets["width_std"],
                  a["italic"].astype(np.float32), a["monospace"].astype(np.float32),
                  a["serif"].astype(np.float32)], axis=1).astype(np.float32)
    module = SmallCNN(n_classes + N_ATTR_OUT, tuple(widths), pool=pool)
    augment = functools.partial(shift_scale, shift=float(shift), scale=float(scale), background=0.0)
    t0 = time.time()
    x = network_input(np.asarray(train.images, np.float32))
    params = fit_small_classifier(module, x, t, _loss(n_classes, attr_weight), steps, batch, key, lr=lr,
                                  quiet=quiet, desc="glyph oracles", mesh=mesh, name="glyph_oracles.batch",
                                  augment=augment)
    seconds = time.time() - t0
    meta = {"size": train.size, "widths": list(widths), "pool": pool, "class_names": list(train.class_names),
            "chars": list(train.chars), "seen": [bool(s) for s in train.seen], "targets": targets,
            "scales": _attribute_scales(a).tolist(), "serif_categories": list(SERIF_CATEGORIES),
            "base_rates": {"italic": float(np.mean(a["italic"])), "monospace": float(np.mean(a["monospace"])),
                           "serif": np.bincount(a["serif"], minlength=len(SERIF_CATEGORIES)).tolist()},
            "training": {"steps": int(steps), "batch": int(batch), "lr": lr, "shift": shift, "scale": scale,
                         "attr_weight": attr_weight, "images": len(train), "faces": len(set(train.face)),
                         "families": len(set(train.family)), "seconds": round(seconds, 1),
                         "devices": jax.device_count()}}
    o = GlyphOracles(params, meta)
    if heldout is not None:
        o.scores = heldout_scores(o, heldout, key=jax.random.fold_in(key, 7), n_boot=n_boot)
    return o


# --------------------------------------------------------------------------- held-out scores
def _cluster_bootstrap(groups, sums: np.ndarray, counts: np.ndarray, key, n_boot: int) -> np.ndarray:
    """Bootstrap replicates (n_boot, K) of ``sum(sums) / sum(counts)`` per column,
    resampling the clusters ``groups`` (one per image) with replacement. ``sums`` and
    ``counts`` (N, K): per image its contribution to each column's numerator and
    denominator."""
    from sage_jax.metrics.uncertainty import rng_from_key

    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_g = int(g.max()) + 1
    s = np.zeros((n_g, sums.shape[1]))
    c = np.zeros((n_g, counts.shape[1]))
    np.add.at(s, g, sums)
    np.add.at(c, g, counts)
    rng = rng_from_key(key)
    w = rng.multinomial(n_g, np.full(n_g, 1.0 / n_g), size=n_boot).astype(np.float64)   # (B, G) draws of each
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ s) / (w @ c)


def _with_intervals(values, replicates, names) -> dict:
    from sage_jax.metrics.uncertainty import percentile_interval

    return {n: percentile_interval(v, replicates[:, j]) for j, (n, v) in enumerate(zip(names, values))}


def heldout_scores(oracles: GlyphOracles, data: GlyphData, key, n_boot: int | None = None,
                   top_confusions: int = 10) -> dict:
    """The oracles on ``data`` (the held-out families): character ``accuracy`` overall,
    seen, unseen and ``per_class``; per attribute its error (``weight_mae``,
    ``width_mae`` in class units; ``italic_accuracy``, ``monospace_accuracy``,
    ``serif_accuracy``); every figure ``{"value", "lo", "hi"}``, the 95% interval a
    bootstrap over the families (:func:`_cluster_bootstrap`). ``attribute_baselines``:
    the same errors of a constant guess (the training mean of weight and width, the
    training majority of the others). ``confusions``: the most
    frequent (true, predicted) pairs of characters; ``confused_pairs``: the letter pairs
    most often confused either way."""
    from sage_jax.metrics.uncertainty import N_BOOT

    n_boot = N_BOOT if n_boot is None else n_boot
    out = oracles.outputs(data.images)
    pred = out[:, :oracles.num_classes].argmax(-1)
    lab = oracles._attributes_from(out)
    correct = (pred == data.labels).astype(np.float64)
    seen = oracles.seen[data.labels]
    ones = np.ones_like(correct)
    C = oracles.num_classes
    onehot = np.eye(C)[data.labels]
    # columns: overall, seen, unseen, attributes, then per class
    errs = {"weight_mae": np.abs(lab["weight"] - data.attributes["weight"]),
            "width_mae": np.abs(lab["width"] - data.attributes["width"]),
            "italic_accuracy": ((lab["italic"] > 0.5) == (data.attributes["italic"] == 1)).astype(np.float64),
            "monospace_accuracy": ((lab["monospace"] > 0.5) == (data.attributes["monospace"] == 1)).astype(np.float64),
            "serif_accuracy": (lab["serif"].argmax(-1) == data.attributes["serif"]).astype(np.float64)}
    # what a constant guess from the training labels scores: the attribute heads learnt
    # something only where they beat it
    t, base = oracles.meta["targets"], oracles.meta["base_rates"]
    a = data.attributes
    baseline = {"weight_mae": float(np.mean(np.abs(a["weight"] - t["weight_mean"]))),
                "width_mae": float(np.mean(np.abs(a["width"] - t["width_mean"]))),
                "italic_accuracy": float(np.mean(a["italic"] == int(base["italic"] > 0.5))),
                "monospace_accuracy": float(np.mean(a["monospace"] == int(base["monospace"] > 0.5))),
                "serif_accuracy": float(np.mean(a["serif"] == int(np.argmax(base["serif"]))))}
    names = ["overall", "seen", "unseen", *errs]
    sums = np.concatenate([np.stack([correct, correct * seen, correct * ~seen, *errs.values()], 1),
                           correct[:, None] * onehot], 1)
    counts = np.concatenate([np.stack([ones, ones * seen, ones * ~seen] + [ones] * len(errs), 1), onehot], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = sums.sum(0) / counts.sum(0)
    reps = _cluster_bootstrap(data.family, sums, counts, key, n_boot)
    ivs = _with_intervals(values[:len(names)], reps[:, :len(names)], names)
    per_class = {}
    for c in range(C):
        if counts[:, len(names) + c].sum() > 0:
            per_class[oracles.class_names[c]] = {
                "char": oracles.chars[c], "seen": bool(oracles.seen[c]),
                "images": int(counts[:, len(names) + c].sum()),
                **_with_intervals([values[len(names) + c]], reps[:, [len(names) + c]], ["accuracy"])}
    conf = np.zeros((C, C), np.int64)
    np.add.at(conf, (data.labels, pred), 1)
    off = conf.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off.ravel(), kind="stable")[::-1][:top_confusions]
    confusions = [{"true": oracles.chars[i // C], "predicted": oracles.chars[i % C], "images": int(off.ravel()[i])}
                  for i in flat if off.ravel()[i] > 0]
    sym = np.triu(off + off.T, 1)
    flat = np.argsort(sym.ravel(), kind="stable")[::-1][:top_confusions]
    pairs = [{"pair": oracles.chars[i // C] + " " + oracles.chars[i % C], "images": int(sym.ravel()[i]),
              "a_as_b": int(off[i // C, i % C]), "b_as_a": int(off[i % C, i // C])}
             for i in flat if sym.ravel()[i] > 0]
    return {"accuracy": {k: ivs[k] for k in ("overall", "seen", "unseen")},
            "attributes": {k: ivs[k] for k in errs}, "attribute_baselines": baseline,
            "per_class": per_class, "confusions": confusions, "confused_pairs": pairs,
            "images": int(len(data)), "faces": len(set(data.face)), "families": len(set(data.family)),
            "interval": f"95% percentile bootstrap over the {len(set(data.family))} families, {n_boot} replicates"}


# --------------------------------------------------------------------------- judging generated letters
def _std(values) -> float:
    """The standard deviation of an attribute's predictions (mean over serif's columns)."""
    return float(np.mean(np.std(np.asarray(values), axis=0)))


def class_name_of(oracles: GlyphOracles, letter) -> str:
    """The class name of ``letter``: a class name, a character or a class index."""
    if isinstance(letter, (int, np.integer)):
        return oracles.class_names[int(letter)]
    if letter in oracles.class_names:
        return letter
    if letter in oracles.chars:
        return oracles.class_names[oracles.chars.index(letter)]
    raise KeyError(f"{letter!r} is not one of the oracles' classes")


class GlyphJudge:
    """The oracles and the real (held-out) images of each target letter; judges
    generated images per letter. ``add(method, letter, images)`` for each method and
    letter, then :meth:`summary`; :meth:`evaluate` does both for one method.

    Letters are class names (``cyrillic_lower_zhe``) or characters (``ж``)."""

    def __init__(self, oracles: GlyphOracles, real: dict):
        from sage_jax.metrics.oracles import GroundTruthSets

        self.oracles = oracles
        self.sets = GroundTruthSets(oracles)
        self.real_attributes: dict[str, dict] = {}
        self.gen_attributes: dict[str, dict[str, dict]] = {}
        for name, (correct, factors, attrs) in self._read(real).items():
            # GroundTruthSets' record of the real images, from one pass of the network over all of them
            self.sets.classes.append(name)
            self.sets.index[name] = oracles.class_names.index(name)
            self.sets.masks[name] = None
            self.sets.real[name] = (correct, factors)
            self.real_attributes[name] = attrs

    def _read(self, images_by_letter: dict) -> dict:
        """``{class name: (correct, factors, attributes)}`` of every letter's images, the
        network run once over all of them (as ``predict_class``, ``predict_factors`` and
        ``predict_attributes`` would give letter by letter)."""
        names = [self._name(x) for x in images_by_letter]
        sets = [np.asarray(v) for v in images_by_letter.values()]
        if not sets:
            return {}
        out = self.oracles.outputs(np.concatenate(sets))
        pred = out[:, :self.oracles.num_classes].argmax(-1)
        attrs = self.oracles._attributes_from(out)
        factors = self.oracles._factors(attrs)
        res, start = {}, 0
        for name, x in zip(names, sets):
            sl = slice(start, start + len(x))
            start += len(x)
            res[name] = (pred[sl] == self.oracles.class_names.index(name), factors[sl],
                         {k: v[sl] for k, v in attrs.items()})
        return res

    def _name(self, letter: str) -> str:
        return class_name_of(self.oracles, letter)

    @classmethod
    def from_dataset(cls, oracles: GlyphOracles, root: str, split: str = "heldout", letters=None) -> "GlyphJudge":
        """Real images of ``letters`` (default: every unseen class) from the ``split``
        faces of the dataset at ``root``."""
        if letters is None:
            letters = [n for n, s in zip(oracles.class_names, oracles.seen) if not s]
        data = load_glyphs(root, split=split, classes=[class_name_of(oracles, x) for x in letters])
        if data.class_names != oracles.class_names:
            raise ValueError(f"{root} has other classes than the oracles")
        names = [class_name_of(oracles, x) for x in letters]
        return cls(oracles, {n: data.images[data.labels == oracles.class_names.index(n)] for n in names})

    @property
    def letters(self) -> list[str]:
        return list(self.sets.classes)

    def add(self, method: str, letter: str, images) -> None:
        self.add_many(method, {letter: images})

    def add_many(self, method: str, generated: dict) -> None:
        """:meth:`add` for every ``{letter: images}`` of ``generated``, the network run once."""
        for name, (correct, factors, attrs) in self._read(generated).items():
            self.sets.gen.setdefault(method, {})[name] = (correct, factors)
            self.gen_attributes.setdefault(method, {})[name] = attrs

    def summary(self, key=None, n_boot: int | None = None, pairs=()) -> dict:
        """:meth:`GroundTruthSets.summary` (retention and diversity per method, overall
        and per letter, with the real images' own retention per letter) plus
        ``attributes[method][attribute]``: the attribute's diversity (generated spread
        over real spread, mean over letters, with the class/image bootstrap interval),
        and the mean over letters of the standard deviation of the predicted attribute
        on generated and on real images (weight, width in class units; italic,
        monospace a probability; serif the mean over categories), ``per_class`` the
        ratios letter by letter."""
        from sage_jax.metrics import uncertainty as u

        key = jax.random.PRNGKey(0) if key is None else key
        n_boot = u.N_BOOT if n_boot is None else n_boot
        out = self.sets.summary(key, n_boot=n_boot, pairs=pairs)
        cl = self.sets.classes
        real_f = [self.sets.real[c][1] for c in cl]
        out["attributes"] = {}
        boots: dict[tuple, tuple] = {}   # one plan per shape (same key: the methods paired), with its caches
        for m, gen in self.sets.gen.items():
            gen_f = [gen[c][1] for c in cl]
            sizes = tuple(len(x) for x in gen_f)
            if sizes not in boots:
                boots[sizes] = (u.ClassBootstrap({"generated": list(sizes), "real": [len(x) for x in real_f]},
                                                 jax.random.fold_in(key, 99), n_boot), {a: {} for a in ATTRIBUTES})
            boot, caches = boots[sizes]
            res = {}
            for a in ATTRIBUTES:
                cols = ATTRIBUTE_COLUMNS[a]
                res[a] = {"diversity": boot.estimate(u.diversity_stat(gen_f, real_f, [cols] * len(cl),
                                                                      real_cache=caches[a]),
                                                     bias_correct=True),
                          "generated_std": float(np.mean([_std(self.gen_attributes[m][c][a]) for c in cl])),
                          "real_std": float(np.mean([_std(self.real_attributes[c][a]) for c in cl])),
                          "per_class": {c: u.spread(gen_f[i], cols) / max(u.spread(real_f[i], cols), 1e-6)
                                        for i, c in enumerate(cl)}}
            out["attributes"][m] = res
        out["letters"] = {c: self.oracles.chars[self.oracles.class_names.index(c)] for c in cl}
        return out

    def evaluate(self, generated: dict, key=None, n_boot: int | None = None, method: str = "generated") -> dict:
        """``add(method, letter, images)`` for every ``{letter: images}`` of ``generated``
        (a subset of the judge's letters), then :meth:`summary` over those letters."""
        names = [self._name(x) for x in generated]
        missing = [x for x, n in zip(generated, names) if n not in self.sets.real]
        if missing:
            raise KeyError(f"no real images of {missing} in this judge")
        judge = self
        if set(names) != set(self.letters):   # a judge of those letters only, sharing the real outputs
            judge = GlyphJudge(self.oracles, {})
            for n in names:
                judge.sets.classes.append(n)
                judge.sets.index[n] = self.sets.index[n]
                judge.sets.masks[n] = self.sets.masks[n]
                judge.sets.real[n] = self.sets.real[n]
                judge.real_attributes[n] = self.real_attributes[n]
        for letter, images in generated.items():
            judge.add(method, letter, images)
        return judge.summary(key, n_boot=n_boot)
