"""Class statistics of the seen classes: class embeddings (Eq. 5) and the moments of
the back-projected codes n_hat (Eq. 18), computed in one streaming pass each and stored
in one ``.npz`` file with the class names, counts, fingerprints of the encoder and
dictionary that made them, and how images became codes (the inversion setting: the
encoder's codes, or refined ones, see :mod:`sage_jax.inversion`).

Several processes (``sage-jax launch``, :mod:`sage_jax.parallel`) share the encoding,
the costly part: :func:`encoded_batches` gives each device of each process whole
batches of the dataset to encode, and every process then adds up every batch's codes
in the dataset's batch order, so every process ends with the same statistics, the
same numbers as one process computes (the codes of a batch do not depend on where it
was encoded: each device encodes one whole batch, the shape one device encodes).
Only process 0 writes the file (:meth:`ClassStatistics.save`)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from sage_jax import parallel
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
        """Write the statistics to ``path`` (``.npz``). In a multi-process run every
        process calls it: process 0 writes, and every process returns once the file is
        written (a barrier), so any of them may read it next."""
        if parallel.is_main():
            self._write(path)
        parallel.barrier(f"class statistics {os.path.basename(path)}")
        return path

    def _write(self, path: str) -> None:
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


def _load_batch(dataset, b: int, batch_size: int):
    """Batch ``b`` of ``dataset.batches(batch_size)``: images ``[b B, (b+1) B)``, the last
    batch padded with its last image under label -1; unreadable images have label -1."""
    n = len(dataset)
    idx = list(range(b * batch_size, min((b + 1) * batch_size, n)))
    k = len(idx)
    imgs, labels = dataset.load_batch(idx + [idx[-1]] * (batch_size - k))
    labels = np.array(labels, np.int32)
    labels[k:] = -1
    return np.asarray(imgs, np.float32), labels


def encoded_batches(encoder, dataset, batch_size: int, desc: str = "encoding", quiet: bool = False):
    """``(codes (B, L, D), labels (B,))`` of every batch of ``dataset`` in order (the
    batches of ``dataset.batches(B)``: fixed size, the last padded with label -1), on
    every process.

    The encoding is split over every device of every process: in round ``r``, local
    device ``k`` of process ``p`` (``K`` devices each, ``T`` in all) encodes batch
    ``r T + p K + k`` (a whole batch, B images per device whatever the device count;
    a slot past the last batch encodes a padding batch that is dropped). Then every
    process gathers the round's codes, so each can fold them in batch order; memory
    holds one round. With one process on one device this is ``dataset.batches``
    encoded one batch at a time. Each process reads only the images of its own
    batches (their skips and conversions land in its own ``dataset.report``;
    :func:`_share_report` merges them)."""
    n_batches = -(-len(dataset) // batch_size)
    procs, p, K = jax.process_count(), jax.process_index(), jax.local_device_count()
    if not hasattr(dataset, "load_batch"):
        if procs > 1 or K > 1:
            raise ValueError(f"{type(dataset).__name__} has no load_batch: several devices need to read "
                             f"batches by their index")
        for imgs, labels in tqdm(dataset.batches(batch_size), total=n_batches, desc=desc, unit="batch",
                                 disable=quiet):
            yield np.asarray(encoder(imgs)), np.asarray(labels)
        return
    T = procs * K
    mesh = parallel.local_mesh()
    size = getattr(dataset, "size", None) or encoder.input_size
    blank = (np.zeros((batch_size, size, size, 3), np.float32), np.full((batch_size,), -1, np.int32))

    def read(pool, r):   # futures of this process's K batches of round r
        return [pool.submit(_load_batch, dataset, b, batch_size) if b < n_batches else None
                for b in (r * T + p * K + k for k in range(K))]

    rounds = -(-n_batches // T)
    import concurrent.futures

    workers = 2 if hasattr(dataset, "paths") else 1   # image files decode in parallel; other sources one at a time
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
            tqdm(total=n_batches, desc=desc, unit="batch", disable=quiet or not parallel.is_main()) as bar:
        ahead = read(pool, 0) if rounds else None
        for r in range(rounds):
            mine = [f.result() if f is not None else blank for f in ahead]
            ahead = read(pool, r + 1) if r + 1 < rounds else None   # the next round's images, meanwhile
            imgs = np.concatenate([x for x, _ in mine])
            labels = np.stack([y for _, y in mine])                          # (K, B)
            codes = np.asarray(encoder(parallel.put_local(imgs, mesh)))
            codes = codes.reshape((K, batch_size) + codes.shape[1:])
            if procs > 1:                                                    # every process's, in slot order
                codes = parallel.gather_rows(codes)
                labels = parallel.gather_rows(labels)
            for g in range(T):
                if r * T + g < n_batches:
                    yield codes[g], labels[g]
                    bar.update(1)


def _share_report(dataset, converted_before: dict) -> None:
    """Every process's skips and conversions of this pass, in every process's
    ``dataset.report`` (each read only its own batches)."""
    report = getattr(dataset, "report", None)
    if jax.process_count() == 1 or report is None or not hasattr(report, "merge"):
        return
    mine = {k: v - converted_before.get(k, 0) for k, v in report.converted.items()}
    everyone = parallel.allgather_objects((dict(report.skipped), mine))
    for q, (skipped, converted) in enumerate(everyone):
        if q != jax.process_index():
            report.merge(skipped, converted)


def _converted(dataset) -> dict:
    report = getattr(dataset, "report", None)
    return dict(getattr(report, "converted", {}) or {})


def compute_class_statistics(encoder, dataset, batch_size: int = 16, dictionary=None,
                             quiet: bool = False) -> ClassStatistics:
    """Class embeddings over ``dataset`` (a FolderDataset at the encoder's input size),
    and, with a ``dictionary``, the per-class moments of n_hat = pinv(A)(w - e_c).
    ``encoder`` is an EncoderModel or an :class:`~sage_jax.inversion.Inverter` (refined
    codes; its setting is recorded). Streams over the data (one pass each), so any
    dataset size works.

    Several processes: every process calls it with the same arguments; the batches are
    encoded where :func:`encoded_batches` says and summed in batch order on every
    process, so all return the same statistics, equal to one process's (bit for bit
    with the encoder's codes; refined codes' optimisation runs per device batch too)."""
    S = dataset.num_classes
    L, D = encoder.n_styles, encoder.style_dim
    sums = jnp.zeros((S, L, D), jnp.float32)
    counts = jnp.zeros((S,), jnp.float32)
    before = _converted(dataset)
    for codes, labels in encoded_batches(encoder, dataset, batch_size, "class embeddings", quiet):
        sums, counts = _accumulate(sums, counts, jnp.asarray(codes), jnp.asarray(labels))
    _share_report(dataset, before)
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
    :class:`~sage_jax.inversion.Inverter` with the statistics' setting). Several
    processes share the encoding and merge the moments in batch order, as
    :func:`compute_class_statistics`."""
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
    before = _converted(dataset)
    for codes, labels in encoded_batches(encoder, dataset, batch_size, "back-projection", quiet):
        m = batch_moments(jnp.asarray(codes), jnp.asarray(labels))
        total = m if total is None else ed.merge_moments(total, m)
    _share_report(dataset, before)
    total = jax.tree_util.tree_map(np.asarray, total)
    return ClassStatistics(stats.class_names, stats.counts, stats.embeddings, stats.encoder_fingerprint,
                           total, fingerprint(dictionary.variables), stats.inversion)


def _setting_of(encoder) -> InversionSetting:
    """The inversion setting of an Inverter; a plain encoder makes the encoder's codes."""
    return getattr(encoder, "setting", InversionSetting())


# ----------------------------------------------------------------------------- a model's classes
CLASSES_FILE = "classes.json"


def write_class_names(model_dir: str, names) -> str:
    """``MODEL/classes.json``: the seen classes' names in label order (label ``i`` of the
    class-conditional generator, row ``i`` of ``class_stats.npz``). ``sage-jax train``
    writes it into every model it bundles."""
    path = os.path.join(model_dir, CLASSES_FILE)
    with open(path, "w") as f:
        json.dump({"seen_classes": [str(n) for n in names]}, f, indent=1)
        f.write("\n")
    return path


def model_class_names(model_dir: str, count: int | None = None) -> tuple[list[str], str]:
    """(the seen classes' names in label order, where they came from) of a model
    directory: its ``classes.json``; for a model without one (the shipped tiny model,
    older models) the classes its ``config.json``'s data section makes (the synthetic
    data's seen classes; a folder dataset's seen split when the folder is there), else
    the names in its ``class_stats.npz``, else ``class_0`` .. Names whose number is not
    ``count`` (the generator's classes, when given) are passed over."""

    def fits(names):
        return names and (count is None or len(names) == count)

    path = os.path.join(model_dir, CLASSES_FILE)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                names = [str(n) for n in json.load(f)["seen_classes"]]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        if fits(names):
            return names, path
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            data = json.load(f).get("data") or {}
        names = _config_class_names(data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        names = []
    if fits(names):
        return names, f"the {data.get('name')} data of {os.path.join(model_dir, 'config.json')}"
    stats = os.path.join(model_dir, "class_stats.npz")
    if os.path.isfile(stats):
        try:
            names = ClassStatistics.load(stats).class_names
        except ValueError:
            names = []
        if fits(names):
            return names, stats
    n = count if count is not None else 0
    return [f"class_{i}" for i in range(n)], "no class names stored with the model"


def _config_class_names(data: dict) -> list[str]:
    """The seen classes a model's data config makes, in label order ([] if unknown)."""
    if data.get("name") == "synthetic":
        from sage_jax.data.synthetic import SyntheticSpec, make_classes, split_classes

        spec = SyntheticSpec(num_seen=int(data["num_seen"]), num_unseen=int(data["num_unseen"]),
                             seed=int(data.get("seed", 0)))
        return [c.name for c in split_classes(make_classes(spec), "seen")]
    if data.get("name") == "folder" and data.get("root") and os.path.isdir(data["root"]):
        from sage_jax.data.folders import scan_folder
        from sage_jax.data.splits import seen_unseen_split

        _, _, names = scan_folder(data["root"], data.get("split") or None)
        if data.get("num_seen"):
            names, _ = seen_unseen_split(names, n_seen=data["num_seen"], n_unseen=data.get("num_unseen") or None)
        return list(names)
    return []


def model_inversion(model_dir: str) -> InversionSetting | None:
    """How a model directory's class statistics turned images into codes (the setting
    recorded in its ``class_stats.npz``, else its ``config.json``'s ``inversion``
    section), or None when it records none."""
    stats = os.path.join(model_dir, "class_stats.npz")
    if os.path.isfile(stats):
        try:
            return ClassStatistics.load(stats).inversion
        except ValueError:
            pass
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            section = json.load(f).get("inversion")
        return InversionSetting.from_dict(section) if section else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
