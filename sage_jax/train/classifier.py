"""Training the downstream classifiers: pre-training on the seen classes, fine-tuning a
new head (and the backbone) on unseen classes, and SGIA's balancing sampler and
bridging transfer (seed 001, section 3.2 eq. (2) and section 3.3 eq. (3)).

Everything is in memory and a function of explicit keys: a *sampler* turns
``(key, steps, batch_size)`` into the dataset indices of every step at once, the loop
gathers each batch on the host, shards it over the ``data`` axis of
``parallel.make_mesh()`` (parameters replicated, so the same code runs on one CPU or
on all GPUs) and calls one jitted step (AdamW or SGD with momentum, linear warm-up then
cosine decay, random shift-crop and optional horizontal-flip augmentation).

The networks (``nn/classifiers.py``) have no BatchNorm, so a classifier is its
``params`` only.

``fit_small_classifier`` is the simpler loop (Adam, no augmentation) of the synthetic
data's oracles (``metrics/oracles.py``) and of Softlabel-GAN's labeller.

Across processes (``parallel.initialize``) both loops work the same way: the batch
size is the *global* batch, refused unless it splits over every device; every process
draws the same indices for every step from the same key, gathers only its own rows of
them (``parallel.process_rows``) and ``parallel.shard_batch`` builds the global batch
from the processes' rows. The batches, their order and (on a given mesh) the trained
parameters are therefore those of one process; the parameters and losses come back to
every process as host arrays (``parallel.to_host``), so evaluating a classifier is a
local computation on each process. Only process 0 writes (:func:`save_classifier`; the
caller puts a ``parallel.barrier`` between the writing and another process's reading).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from sage_jax import parallel


# ------------------------------------------------- small in-memory classifiers
@functools.partial(jax.jit, static_argnums=0)
def predict_jit(module, params, x):
    """``module`` applied to ``x`` with ``params``, jitted per module."""
    return module.apply({"params": params}, x)


def fit_small_classifier(module, x, targets, loss_fn, steps, batch, key, lr=2e-3, quiet=True, desc="",
                         mesh=None, name="batch", augment=None):
    """The parameters of ``module`` after ``steps`` Adam steps (cosine-decayed ``lr``) on
    ``loss_fn(outputs, targets)`` over random batches of the in-memory ``x``: the
    recipe of the ground-truth oracles and of Softlabel-GAN's labeller.

    ``batch`` is the global batch (``name`` is what the refusal of one that does not
    split over the devices of ``mesh``, default every device, calls it). Each step's
    indices are ``choice(fold_in(key, step), len(x), batch)`` on every process; a
    process feeds its rows of them. ``augment(key, xb) -> xb``: applied to every batch
    inside the compiled step (the glyph oracles' small shifts and scalings), its key
    ``fold_in(fold_in(key, step), 1)``; None (default): the images as they are. Returns
    host (numpy) parameters."""
    mesh = mesh if mesh is not None else parallel.make_mesh()
    parallel.check_batch_size(batch, mesh, name)
    rows = parallel.process_rows(batch)
    params = module.init(key, x[:1])["params"]
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt = tx.init(params)
    params, opt = parallel.replicate((params, opt), mesh)

    @jax.jit
    def step(params, opt, xb, tb, k):
        if augment is not None:
            xb = augment(k, xb)
        loss, g = jax.value_and_grad(lambda p: loss_fn(module.apply({"params": p}, xb), tb))(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    n = len(x)
    for i in tqdm(range(steps), desc=desc, disable=quiet or not parallel.is_main(), unit="step"):
        # with replacement only when the set is smaller than a batch (a tiny or long-tailed dataset)
        k = jax.random.fold_in(key, i)
        idx = np.asarray(jax.random.choice(k, n, (batch,), replace=batch > n))[rows]
        xb, tb = parallel.shard_batch((x[idx], targets[idx]), mesh)
        # a host key (like the batch): every process passes the same replicated value
        ka = np.asarray(jax.random.fold_in(k, 1)) if augment is not None else None
        params, opt, _ = step(params, opt, xb, tb, ka)
    return parallel.to_host(params)


# --------------------------------------------------------------------------- result
@dataclasses.dataclass
class TrainedClassifier:
    """A classifier module and its params, plus the training loss of every step
    (host array, empty for a classifier that was not trained here)."""

    model: nn.Module
    params: Any
    losses: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0,), np.float32))

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def logits(self, images, batch_size: int = 256) -> np.ndarray:
        return _batched(self.model, self.params, images, batch_size, "logits")

    def features(self, images, batch_size: int = 256) -> np.ndarray:
        """The pooled embedding (N, D) of ``images``."""
        return _batched(self.model, self.params, images, batch_size, "features")

    def predict(self, images, batch_size: int = 256) -> np.ndarray:
        return self.logits(images, batch_size).argmax(-1)

    def accuracy(self, images, labels, batch_size: int = 256) -> float:
        return float(np.mean(self.predict(images, batch_size) == np.asarray(labels)))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(model, params, x, what):
    if what == "features":
        return model.apply({"params": params}, x, method=model.features)
    return model.apply({"params": params}, x)


def _init(module, key, shape: jax.ShapeDtypeStruct):
    """``module``'s params, initialised by one compiled function per (module, input
    shape) -- cached across calls; Flax's eager ``init`` compiles every initialiser
    op separately, which costs tens of seconds on a busy CPU."""
    return _init_jit(module, key, shape.shape, shape.dtype)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init_jit(module, key, shape, dtype):
    return module.init(key, jnp.zeros(shape, dtype))["params"]


def _batched(model, params, images, batch_size, what):
    images = np.asarray(images, np.float32)
    n = len(images)
    if n == 0:
        raise ValueError("no images")
    b = min(batch_size, n)
    out = []
    for start in range(0, n, b):
        x = images[start:start + b]
        k = len(x)
        if k < b:  # pad to one shape: one compilation
            x = np.concatenate([x, np.repeat(x[-1:], b - k, axis=0)])
        out.append(np.asarray(_apply(model, params, jnp.asarray(x), what))[:k])
    return np.concatenate(out)


def make_classifier(model_cfg, num_classes: int) -> nn.Module:
    """A classifier from a config section: ``kind`` ("resnet" | "vit"), ``head_type``
    ("linear" | "cosine"), and the network's own fields (``widths``, ``blocks``,
    ``groups`` for a ResNet; ``image_size``, ``patch``, ``width``, ``depth``,
    ``heads``, ``mlp_ratio`` for a ViT). Unknown fields are an error."""
    from sage_jax.nn.classifiers import ResNet, ViT

    cfg = dict(model_cfg)
    kind = cfg.pop("kind")
    cls = {"resnet": ResNet, "vit": ViT}.get(kind)
    if cls is None:
        raise ValueError(f"unknown classifier kind {kind!r} (resnet | vit)")
    for k in ("widths", "blocks"):
        if k in cfg:
            cfg[k] = tuple(cfg[k])
    return cls(num_classes=num_classes, **cfg)


def save_classifier(clf: TrainedClassifier, path: str) -> None:
    """``path`` (a directory): ``model.json`` (network kind and fields) and
    ``params.msgpack`` (Flax serialisation), written by process 0 only (on any other
    this does nothing). No collective inside, so a caller may call it on process 0
    alone; before another process loads it, every process passes a ``parallel.barrier``."""
    import json
    import os

    from flax import serialization

    from sage_jax.nn.classifiers import ResNet, ViT

    kind = "resnet" if isinstance(clf.model, ResNet) else "vit" if isinstance(clf.model, ViT) else None
    if kind is None:
        raise TypeError(f"cannot save a {type(clf.model).__name__}")
    fields = {f.name: getattr(clf.model, f.name) for f in dataclasses.fields(clf.model)
              if f.name not in ("parent", "name")}
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    params = parallel.to_host(clf.params)
    if parallel.is_main():
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "model.json"), "w") as f:
            json.dump({"kind": kind, **fields}, f, indent=1)
        with open(os.path.join(path, "params.msgpack"), "wb") as f:
            f.write(serialization.msgpack_serialize(params))


def load_classifier(path: str) -> TrainedClassifier:
    """The classifier :func:`save_classifier` wrote (no loss history)."""
    import json
    import os

    from flax import serialization

    with open(os.path.join(path, "model.json")) as f:
        cfg = json.load(f)
    n = cfg.pop("num_classes")
    model = make_classifier(cfg, n)
    with open(os.path.join(path, "params.msgpack"), "rb") as f:
        params = serialization.msgpack_restore(f.read())
    return TrainedClassifier(model, jax.tree_util.tree_map(jnp.asarray, params))


# --------------------------------------------------------------------------- samplers
class ArraySampler:
    """Uniform sampling (with replacement, i.i.d. slots) from ``images``/``labels``. ``is_generated``
    (bool per image, default all False) is carried along so that a loop can report
    what it trained on; SAGE's NAS "plain mixing" is an ArraySampler over the union of
    shots and generated images."""

    def __init__(self, images, labels, is_generated=None):
        self.images = np.asarray(images, np.float32)
        self.labels = np.asarray(labels, np.int32)
        if len(self.images) != len(self.labels) or len(self.images) == 0:
            raise ValueError("need as many labels as images, and at least one image")
        self.is_generated = np.zeros(len(self.images), bool) if is_generated is None \
            else np.asarray(is_generated, bool)

    def plan(self, key, steps: int, batch_size: int) -> np.ndarray:
        """(steps, batch_size) indices into ``self.images``; step ``s`` from
        ``fold_in(key, s)``, so a batch depends on the key and its step only."""
        return np.asarray(_uniform_plan(key, len(self.images), steps, batch_size))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform_plan(key, n, steps, batch_size):
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(steps))
    return jax.vmap(lambda k: jax.random.randint(k, (batch_size,), 0, n))(keys)


def balanced_indices(key, real_labels, generated_labels, alpha: float, batch_size: int):
    """SGIA's balancing sampler, eq. (2) of seed 001, for one batch.

    Each slot ``l`` draws a real image ``i ~ U(1..N)``; with probability ``alpha`` the
    slot holds a generated image of the same class as ``x_i`` instead (uniform over
    that class's generated images: SGIA's ``x~_ijk`` derived from ``x_i``, where we
    only know the class an image was generated for). The class mixture of a batch is
    therefore the real one for every alpha. A class with no generated image keeps its
    real image. Returns ``(is_generated (B,) bool, index (B,) int32)``: ``index``
    points into the real set where ``is_generated`` is False, else into the
    generated set. Pure ``jax.random`` on ``key``.
    """
    tables = _class_tables(real_labels, generated_labels)
    return _balanced_core(key, jnp.asarray(real_labels, jnp.int32), *tables, jnp.float32(alpha), batch_size)


def _class_tables(real_labels, generated_labels):
    """(order, counts, starts) of the generated images grouped by class."""
    gen_labels = np.asarray(generated_labels, np.int32)
    n_classes = int(max(int(np.max(real_labels)), int(gen_labels.max()) if gen_labels.size else 0)) + 1
    order = np.argsort(gen_labels, kind="stable").astype(np.int32)
    counts = np.bincount(gen_labels, minlength=n_classes).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    if order.size == 0:
        order = np.zeros(1, np.int32)  # never used: every class has count 0
    return jnp.asarray(order), jnp.asarray(counts), jnp.asarray(starts)


@functools.partial(jax.jit, static_argnums=(6,))
def _balanced_core(key, real_labels, order, counts, starts, alpha, batch_size):
    k_real, k_coin, k_gen = jax.random.split(key, 3)
    i = jax.random.randint(k_real, (batch_size,), 0, real_labels.shape[0])
    c = real_labels[i]
    cnt = counts[c]
    coin = jax.random.bernoulli(k_coin, alpha, (batch_size,)) & (cnt > 0)
    u = jax.random.uniform(k_gen, (batch_size,))
    j = starts[c] + jnp.clip(jnp.floor(u * cnt).astype(jnp.int32), 0, jnp.maximum(cnt - 1, 0))
    j = order[jnp.clip(j, 0, order.shape[0] - 1)]
    return coin, jnp.where(coin, j, i).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _balanced_plan(key, real_labels, order, counts, starts, alpha, steps, batch_size):
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(steps))
    return jax.vmap(lambda k: _balanced_core(k, real_labels, order, counts, starts, alpha, batch_size))(keys)


class BalancedSampler(ArraySampler):
    """:func:`balanced_indices` for every step (step ``s`` uses ``fold_in(key, s)``),
    over the pool ``real + generated`` (indices into the concatenation)."""

    def __init__(self, real_images, real_labels, generated_images, generated_labels, alpha: float):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.n_real = len(real_images)
        self.real_labels = np.asarray(real_labels, np.int32)
        self.generated_labels = np.asarray(generated_labels, np.int32)
        self.alpha = float(alpha)
        super().__init__(np.concatenate([np.asarray(real_images, np.float32),
                                         np.asarray(generated_images, np.float32).reshape(
                                             (-1,) + np.shape(real_images)[1:])]),
                         np.concatenate([self.real_labels, self.generated_labels]),
                         np.concatenate([np.zeros(self.n_real, bool), np.ones(len(self.generated_labels), bool)]))

    def plan(self, key, steps: int, batch_size: int) -> np.ndarray:
        tables = _class_tables(self.real_labels, self.generated_labels)
        gen, idx = _balanced_plan(key, jnp.asarray(self.real_labels), *tables, jnp.float32(self.alpha), steps,
                                  batch_size)
        return np.asarray(jnp.where(gen, idx + self.n_real, idx))


def balanced_batches(real_images, real_labels, generated_images, generated_labels, *, alpha: float,
                     batch_size: int, key, steps: int):
    """Yield ``(images, labels, is_generated)`` for ``steps`` batches of SGIA's
    balancing sampler (:func:`balanced_indices`, step ``s`` from ``fold_in(key, s)``)."""
    s = BalancedSampler(real_images, real_labels, generated_images, generated_labels, alpha)
    for idx in s.plan(key, steps, batch_size):
        yield s.images[idx], s.labels[idx], s.is_generated[idx]


# --------------------------------------------------------------------------- training
def augment_batch(key, x, *, flip: bool, crop_pad: int):
    """Random shift (reflect-pad by ``crop_pad`` then crop back) and, with ``flip``,
    a random horizontal flip, independently per image."""
    n, h, w, c = x.shape
    k_flip, k_y, k_x = jax.random.split(key, 3)
    if flip:
        f = jax.random.bernoulli(k_flip, 0.5, (n,))
        x = jnp.where(f[:, None, None, None], x[:, :, ::-1], x)
    if crop_pad > 0:
        p = crop_pad
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        oy = jax.random.randint(k_y, (n,), 0, 2 * p + 1)
        ox = jax.random.randint(k_x, (n,), 0, 2 * p + 1)
        x = jax.vmap(lambda im, a, b: jax.lax.dynamic_slice(im, (a, b, 0), (h, w, c)))(xp, oy, ox)
    return x


def make_optimizer(steps: int, *, lr: float, weight_decay: float, warmup_steps: int, optimizer: str):
    """``(direction, schedule)``: the update direction before the learning rate and the
    learning rate of each step (linear warm-up then cosine decay to 0). AdamW
    (default: Adam then decoupled weight decay) or SGD with momentum 0.9 and L2 weight
    decay added to the gradient (the thesis' and SGIA's optimiser). The step applies
    ``-schedule(step) * direction``; keeping the schedule outside the compiled step
    lets every run length share one compilation."""
    warmup = min(warmup_steps, max(steps - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), 0.0)
    return _direction(optimizer, float(weight_decay)), sched


def _direction(optimizer: str, weight_decay: float):
    if optimizer == "adamw":
        return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay))
    if optimizer == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.trace(decay=0.9))
    raise ValueError(f"unknown optimizer {optimizer!r} (adamw | sgd)")


@functools.lru_cache(maxsize=32)
def _train_step(model, weight_decay, optimizer, flip, pad, frozen):
    """(direction transform, jitted step) for one configuration; cached so that the
    many fine-tunings of one NAS call compile once. ``frozen``: top-level param names
    not trained."""
    tx = _direction(optimizer, weight_decay)
    if frozen:
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                                   lambda params: {k: ("freeze" if k in frozen else "train") for k in params})

    @jax.jit
    def step(params, opt, x, y, k, lr):
        x = augment_batch(k, x, flip=flip, crop_pad=pad)

        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        upd, opt = tx.update(g, opt, params)
        upd = jax.tree_util.tree_map(lambda u: -lr * u, upd)
        return optax.apply_updates(params, upd), opt, loss

    return tx, step


def _fit(model, params, sampler, *, key, steps, batch_size, lr, weight_decay, warmup_steps, optimizer,
         flip, crop_pad, train_backbone, mesh, on_batch, progress=False, desc="train"):
    mesh = mesh if mesh is not None else parallel.make_mesh()
    parallel.check_batch_size(batch_size, mesh)
    size = sampler.images.shape[1]
    pad = max(size // 8, 1) if crop_pad is None or crop_pad < 0 else int(crop_pad)
    frozen = () if train_backbone else tuple(sorted(k for k in params if k != "head"))
    _, sched = make_optimizer(steps, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                              optimizer=optimizer)
    tx, step = _train_step(model, float(weight_decay), optimizer, bool(flip), pad, frozen)
    rows = parallel.process_rows(batch_size)
    k_data, k_aug = jax.random.split(key)
    plan = sampler.plan(k_data, steps, batch_size)   # the global batches, the same on every process
    if steps > 0:
        lrs = np.asarray(jax.vmap(sched)(jnp.arange(steps)), np.float32)
        # host keys (like the rates): every process passes the same replicated values
        aug_keys = np.asarray(jax.vmap(lambda s: jax.random.fold_in(k_aug, s))(jnp.arange(steps)))

    params = parallel.replicate(params, mesh)
    opt = parallel.replicate(tx.init(params), mesh)
    losses = []
    for s in tqdm(range(steps), desc=desc, unit="step", disable=not progress or not parallel.is_main(),
                  leave=False):
        idx = plan[s][rows]   # this process's rows of the global batch
        x, y = sampler.images[idx], sampler.labels[idx]
        if on_batch is not None:
            on_batch(s, x, y, sampler.is_generated[idx])
        xb, yb = parallel.shard_batch((x, y), mesh)
        params, opt, loss = step(params, opt, xb, yb, aug_keys[s], lrs[s])
        losses.append(loss)
    losses = parallel.to_host(jnp.stack(losses)) if losses else np.zeros((0,), np.float32)
    return parallel.to_host(params), losses


def pretrain(model: nn.Module, images, labels, *, key, steps: int = 2000, batch_size: int = 64,
             lr: float = 1e-3, weight_decay: float = 1e-4, warmup_steps: int = 100, optimizer: str = "adamw",
             flip: bool = False, crop_pad: int | None = None, mesh=None,
             on_batch: Callable | None = None, progress: bool = False) -> TrainedClassifier:
    """Train ``model`` (``nn/classifiers.py``, ``num_classes`` > max label) from
    scratch with cross-entropy on ``images`` (N, S, S, 3) in [-1, 1] and integer
    ``labels`` -- the seen classes. ``crop_pad=None`` shifts by up to S // 8 pixels;
    ``flip`` is off by default because on the synthetic data a horizontal flip turns
    an oriented class into another (arrow-r0 into arrow-r180). ``batch_size`` is the
    global batch. ``on_batch(step, images, labels, is_generated)`` sees every host
    batch: this process's rows of the step's global batch (all of it with one process). ``key`` initialises the
    params (``fold_in(key, 0)``) and draws batches and augmentation (``fold_in(key, 1)``)."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    if labels.max() >= model.num_classes:
        raise ValueError(f"label {labels.max()} does not fit a {model.num_classes}-class model")
    params = _init(model, jax.random.fold_in(key, 0), jax.ShapeDtypeStruct((1,) + images.shape[1:], jnp.float32))
    params, losses = _fit(model, params, ArraySampler(images, labels), key=jax.random.fold_in(key, 1),
                          steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                          warmup_steps=warmup_steps, optimizer=optimizer, flip=flip, crop_pad=crop_pad,
                          train_backbone=True, mesh=mesh, on_batch=on_batch, progress=progress, desc="pre-train")
    return TrainedClassifier(model, params, losses)


def with_new_head(pretrained: TrainedClassifier, num_classes: int, key) -> TrainedClassifier:
    """The pre-trained backbone with a freshly initialised ``num_classes`` head (only
    the head is initialised: cheap)."""
    from sage_jax.nn.classifiers import make_head

    model = pretrained.model.clone(num_classes=num_classes)
    dim = feature_dim(pretrained)
    head = make_head(model.head_type, num_classes, model.cosine_scale, model.learn_scale)
    fresh = _init(head, key, jax.ShapeDtypeStruct((1, dim), jnp.float32))
    params = {k: v for k, v in pretrained.params.items() if k != "head"}
    params["head"] = fresh
    return TrainedClassifier(model, params)


def feature_dim(clf: TrainedClassifier) -> int:
    """The width of ``clf.features``, read off the head's parameters."""
    return int(clf.params["head"]["kernel"].shape[0])


def finetune(pretrained: TrainedClassifier, data, *, key, num_classes: int | None = None,
             new_head: bool = True, train_backbone: bool = True, steps: int = 500, batch_size: int = 32,
             lr: float = 1e-3, weight_decay: float = 1e-4, warmup_steps: int = 20, optimizer: str = "adamw",
             flip: bool = False, crop_pad: int | None = None, mesh=None,
             on_batch: Callable | None = None, progress: bool = False) -> TrainedClassifier:
    """Fine-tune on the unseen classes. ``data``: ``(images, labels)`` (labels in
    ``0..num_classes-1``) or a sampler (:class:`ArraySampler`, :class:`BalancedSampler`).
    With ``new_head`` the head is replaced by a fresh ``num_classes`` head
    (``fold_in(key, 0)``; default ``num_classes`` = max label + 1), else training
    continues from ``pretrained``'s head (bridging's second stage). With
    ``train_backbone=False`` only the head moves (linear probing). Batches and
    augmentation come from ``fold_in(key, 1)``."""
    sampler = data if isinstance(data, ArraySampler) else ArraySampler(*data)
    if new_head:
        n = num_classes if num_classes is not None else int(sampler.labels.max()) + 1
        start = with_new_head(pretrained, n, jax.random.fold_in(key, 0))
    else:
        start = pretrained
    if sampler.labels.max() >= start.num_classes:
        raise ValueError(f"label {sampler.labels.max()} does not fit a {start.num_classes}-class head")
    params, losses = _fit(start.model, start.params, sampler, key=jax.random.fold_in(key, 1), steps=steps,
                          batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                          optimizer=optimizer, flip=flip, crop_pad=crop_pad, train_backbone=train_backbone,
                          mesh=mesh, on_batch=on_batch, progress=progress, desc="fine-tune")
    return TrainedClassifier(start.model, params, losses)


def bridging_finetune(pretrained: TrainedClassifier, real, generated, *, key, alpha: float = 0.5,
                      stage1_steps: int = 500, stage2_steps: int = 500, num_classes: int | None = None,
                      on_batch: Callable | None = None, **train_kw) -> tuple[TrainedClassifier, TrainedClassifier]:
    """SGIA's bridging transfer learning, eq. (3) of seed 001:
    ``M_brg <- Theta(M_pre, L_alpha)`` then ``M_cls <- Theta(M_brg, L_0)``.

    Stage 1 fine-tunes a new head and the backbone for ``stage1_steps`` on the
    balancing sampler over ``real`` = (images, labels) and ``generated`` = (images,
    labels) (:func:`balanced_indices`); stage 2 continues from that model (same head)
    for ``stage2_steps`` on the real images only. ``train_kw`` (batch_size, lr, ...)
    apply to both stages; ``on_batch(stage, step, images, labels, is_generated)``
    sees every batch of both. Returns ``(final, bridge)``. The stage-1 key is
    ``key`` itself (so its head initialisation and augmentation match a plain
    :func:`finetune` with the same key); stage 2 uses ``fold_in(key, 2)``."""
    hook = (lambda stage: (lambda *a: on_batch(stage, *a))) if on_batch is not None else (lambda stage: None)
    n = num_classes if num_classes is not None else int(max(np.max(real[1]), np.max(generated[1]))) + 1
    bridge = finetune(pretrained, BalancedSampler(real[0], real[1], generated[0], generated[1], alpha), key=key,
                      num_classes=n, steps=stage1_steps, on_batch=hook(1), **train_kw)
    final = finetune(bridge, ArraySampler(real[0], real[1]), key=jax.random.fold_in(key, 2), new_head=False,
                     steps=stage2_steps, on_batch=hook(2), **train_kw)
    return final, bridge
