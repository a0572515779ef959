"""Class statistics of the seen classes: class embeddings (Eq. 5) and the moments of
the back-projected codes n_hat (Eq. 18), computed in one streaming pass each and stored
in one ``.npz`` file with the class names, counts, fingerprints of the encoder and
dictionary that made them, and how images became codes (the inversion setting: the
encoder's codes, or refined ones, see :mod:`sage_jax.inversion`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sage_jax.inversion import InversionSetting, check_setting
from sage_jax.sage import editing as ed

FORMAT = "sage-jax-class-statistics"


def fingerprint(variables) -> str:
    """A short hash of a model's parameters (to tell which model made a file)."""
    h = hashlib.sha256()
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    h.update(str(treedef).encode())
    for leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf, np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass
class ClassStatistics:
    class_names: list[str]
    counts: np.ndarray          # (S,) images per class
    embeddings: np.ndarray      # (S, L, D) class embeddings, raw codes (Eq. 5)
    encoder_fingerprint: str
    moments: ed.CodeMoments | None = None   # per-class moments of n_hat (Eq. 18-19)
    dictionary_fingerprint: str | None = None
    inversion: InversionSetting = InversionSetting()   # how the codes were made

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def save(self, path: str) -> str:
        arrays = {"counts": self.counts, "embeddings": self.embeddings,
                  "class_names": np.asarray(self.class_names, dtype=object).astype(str)}
        if self.moments is not None:
            arrays.update(n_count=np.asarray(self.moments.count), n_mean=np.asarray(self.moments.mean),
                          n_mean_abs=np.asarray(self.moments.mean_abs), n_m2=np.asarray(self.moments.m2))
        meta = {"format": FORMAT, "version": 1, "encoder_fingerprint": self.encoder_fingerprint,
                "dictionary_fingerprint": self.dictionary_fingerprint, "inversion": self.inversion.as_dict()}
        arrays["meta"] = np.asarray(json.dumps(meta))
        tmp = path + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> "ClassStatistics":
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError("not a class statistics file")
                moments = None
                if "n_mean" in f:
                    moments = ed.CodeMoments(f["n_count"], f["n_mean"], f["n_mean_abs"], f["n_m2"])
                # files written before refinement existed hold the encoder's codes
                inversion = InversionSetting.from_dict(meta.get("inversion"))
                return cls([str(c) for c in f["class_names"]], f["counts"], f["embeddings"],
                           meta["encoder_fingerprint"], moments, meta.get("dictionary_fingerprint"), inversion)
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a readable class statistics file ({e})") from None


@jax.jit
def _accumulate(sums, counts, codes, labels):
    return ed.accumulate_class_sums(sums, counts, codes, labels)


def compute_class_statistics(encoder, dataset, batch_size: int = 16, dictionary=None,
                             quiet: bool = False) -> ClassStatistics:
    """Class embeddings over ``dataset`` (a FolderDataset at the encoder's input size),
    and, with a ``dictionary``, the per-class moments of n_hat = pinv(A)(w - e_c).
    ``encoder`` is an EncoderModel or an :class:`~sage_jax.inversion.Inverter` (refined
    codes; its setting is recorded). Streams over the data (one pass each), so any
    dataset size works."""
    S = dataset.num_classes
    L, D = encoder.n_styles, encoder.style_dim
    sums = jnp.zeros((S, L, D), jnp.float32)
    counts = jnp.zeros((S,), jnp.float32)
    n_batches = -(-len(dataset) // batch_size)
    for imgs, labels in tqdm(dataset.batches(batch_size), total=n_batches, desc="class embeddings",
                             unit="batch", disable=quiet):
        sums, counts = _accumulate(sums, counts, encoder(imgs), jnp.asarray(labels))
    if np.any(np.asarray(counts) == 0):
        empty = [dataset.class_names[i] for i in np.flatnonzero(np.asarray(counts) == 0)]
        raise ValueError(f"classes without a single readable image: {empty[:5]}")
    emb = ed.class_embeddings(sums, counts)
    stats = ClassStatistics(list(dataset.class_names), np.asarray(counts).astype(np.int64), np.asarray(emb),
                            fingerprint(encoder.variables), inversion=_setting_of(encoder))
    if dictionary is not None:
        stats = add_code_moments(stats, encoder, dataset, dictionary, batch_size, quiet)
    return stats


def add_code_moments(stats: ClassStatistics, encoder, dataset, dictionary, batch_size: int = 16,
                     quiet: bool = False) -> ClassStatistics:
    """The per-class moments of the back-projected codes n_hat (Eq. 18) of every image.
    ``encoder`` must make codes as the class embeddings' were (an
    :class:`~sage_jax.inversion.Inverter` with the statistics' setting)."""
    check_setting(stats.inversion, _setting_of(encoder))
    layers = jnp.asarray(dictionary.edited_layers)
    A_pinv = ed.pseudo_inverse(dictionary.A)
    emb = jnp.asarray(stats.embeddings)
    S = stats.num_classes

    @jax.jit
    def batch_moments(codes, labels):
        e = emb[jnp.clip(labels, 0)]
        n = ed.back_project(A_pinv, (codes - e)[:, layers])
        return ed.moments_from_codes(n, labels, S)

    total = None
    n_batches = -(-len(dataset) // batch_size)
    for imgs, labels in tqdm(dataset.batches(batch_size), total=n_batches, desc="back-projection",
                             unit="batch", disable=quiet):
        m = batch_moments(encoder(imgs), jnp.asarray(labels))
        total = m if total is None else ed.merge_moments(total, m)
    total = jax.tree_util.tree_map(np.asarray, total)
    return ClassStatistics(stats.class_names, stats.counts, stats.embeddings, stats.encoder_fingerprint,
                           total, fingerprint(dictionary.variables), stats.inversion)


def _setting_of(encoder) -> InversionSetting:
    """The inversion setting of an Inverter; a plain encoder makes the encoder's codes."""
    return getattr(encoder, "setting", InversionSetting())
