"""Ready-to-call models: a Flax module bound to its variables, with jitted entry points.

``GeneratorModel`` is what :func:`sage_jax.checkpoints.load_generator` returns::

    G = checkpoints.load_generator(ckpt["g_ema"])
    img = G(z)                                        # (N, H, W, 3), stored noise
    img = G(w_plus, input_is_latent=True, noise="random", key=key,
            truncation=0.7, truncation_latent=w_avg)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.nn.layers import wide_dtype
from sage_jax.nn.dictionary import AttributeDictionary
from sage_jax.nn.psp import ENCODERS
from sage_jax.nn.stylegan2 import Discriminator, Generator, n_latent_for, noise_shapes


@functools.partial(jax.jit, static_argnames=(
    "module", "input_is_latent", "randomize", "return_latents", "truncate"))
def _generate(module, variables, styles, noise, key, truncation, truncation_latent, inject_index, labels=None,
              *, input_is_latent, randomize, return_latents, truncate):
    rngs = {"noise": key} if key is not None else {}
    return module.apply(
        variables, list(styles), input_is_latent=input_is_latent, noise=noise,
        randomize_noise=randomize, truncation=truncation if truncate else 1.0,
        truncation_latent=truncation_latent if truncate else None,
        inject_index=inject_index, return_latents=return_latents, labels=labels, rngs=rngs)


@functools.partial(jax.jit, static_argnames=("module",))
def _mapping(module, variables, z, labels=None):
    return module.apply(variables, z, labels, method=Generator.mapping)


@functools.partial(jax.jit, static_argnames=("module",))
def _discriminate(module, variables, images, labels=None):
    return module.apply(variables, images, labels)


def label_vectors(labels, c_dim: int, n: int | None = None, what: str = "labels") -> jax.Array:
    """Class labels as probability vectors (N, c_dim) float32: class indices (N,) become
    one-hot rows; (N, c_dim) rows must be non-negative and sum to 1 (soft labels)."""
    arr = np.asarray(labels)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() >= c_dim):
            raise ValueError(f"{what}: class indices must lie in [0, {c_dim}), got {arr.min()}..{arr.max()}")
        arr = np.eye(c_dim, dtype=np.float32)[arr]
    arr = arr.astype(np.float32)
    if arr.ndim != 2 or arr.shape[1] != c_dim:
        raise ValueError(f"{what} must be class indices (N,) or probability vectors (N, {c_dim}), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{what}: {arr.shape[0]} rows for {n} codes")
    if arr.size and (arr.min() < 0 or not np.allclose(arr.sum(axis=1), 1.0, atol=1e-3)):
        raise ValueError(f"{what}: rows must be probability vectors (non-negative, summing to 1)")
    return jnp.asarray(arr)


class GeneratorModel:
    """A StyleGAN2 generator with its parameters and stored noise buffers.

    Attributes: ``config`` (constructor arguments, JSON-able), ``variables``
    (``{'params': ..., 'noises': ...}``), ``module`` (the Flax :class:`Generator`).
    """

    kind = "generator"

    def __init__(self, config: dict, variables: dict, dtype: Any = jnp.float32):
        self.config = _plain_config(config)
        self.dtype = jnp.dtype(dtype)
        self.module = Generator(**_module_kwargs(self.config), dtype=self.dtype)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

    # --- architecture -------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.config["size"]

    @property
    def style_dim(self) -> int:
        return self.config["style_dim"]

    @property
    def c_dim(self) -> int:
        """Length of the label vectors of a class-conditional generator (0: unconditional)."""
        return int(self.config.get("c_dim", 0))

    @property
    def n_latent(self) -> int:
        return n_latent_for(self.size)

    @property
    def num_layers(self) -> int:
        return len(noise_shapes(self.size))

    def astype(self, dtype) -> "GeneratorModel":
        """The same weights with another compute dtype (parameters stay float32)."""
        return GeneratorModel(self.config, self.variables, dtype)

    # --- calls --------------------------------------------------------------------
    def __call__(self, styles, *, input_is_latent: bool = False, noise: str | Sequence = "stored",
                 key: jax.Array | None = None, truncation: float = 1.0, truncation_latent=None,
                 inject_index: int | None = None, return_latents: bool = False, labels=None):
        """Images (N, H, W, 3) in about [-1, 1], float32 (float64 for a float64 generator), and
        the W+ codes used with ``return_latents``.

        ``styles``: z (N, D); with ``input_is_latent`` W (N, D) or W+ (N, >=n_latent, D);
        or a list of two (N, D) codes for style mixing at ``inject_index`` (drawn from
        ``key`` when None). ``noise``: ``"stored"`` (the checkpoint's buffers, the
        reference's ``randomize_noise=False``), ``"random"`` (needs ``key``) or a list of
        ``num_layers`` arrays (N or 1, h, w, 1) — reference-shaped (N, 1, h, w) accepted.
        ``labels``: for a class-conditional generator (``c_dim > 0``) fed z, class
        indices (N,) or probability vectors (N, c_dim); W / W+ inputs need none.
        """
        style_list = list(styles) if isinstance(styles, (list, tuple)) else [styles]
        wide = wide_dtype(self.dtype)  # float32 inputs, float64 for a float64 generator
        style_list = [jnp.asarray(s, wide) for s in style_list]
        self._check_styles(style_list, input_is_latent)
        label_arg = self._labels_for(labels, style_list[0].shape[0], input_is_latent)
        randomize = False
        noise_arg = None
        if isinstance(noise, str):
            if noise == "random":
                if key is None:
                    raise ValueError("noise='random' needs a key")
                randomize = True
            elif noise != "stored":
                raise ValueError(f"noise must be 'stored', 'random' or a list of arrays, got {noise!r}")
        else:
            noise_arg = self._check_noise(noise)
        if len(style_list) == 2 and inject_index is None and key is None:
            raise ValueError("style mixing without inject_index needs a key")
        truncate = truncation is not None and float(truncation) < 1.0
        if truncate and truncation_latent is None:
            raise ValueError("truncation < 1 needs truncation_latent (e.g. G.mean_latent(4096, key))")
        t_lat = jnp.asarray(truncation_latent, wide) if truncate else None
        inj = None if inject_index is None else jnp.asarray(inject_index, jnp.int32)
        out = _generate(self.module, self.variables, tuple(style_list), noise_arg, key,
                        jnp.asarray(truncation, wide), t_lat, inj, label_arg,
                        input_is_latent=input_is_latent, randomize=randomize,
                        return_latents=return_latents, truncate=truncate)
        return out

    def _labels_for(self, labels, n: int, input_is_latent: bool):
        if input_is_latent:
            return None  # W / W+ codes already carry the class
        if not self.c_dim:
            if labels is not None:
                raise ValueError("labels given to an unconditional generator (c_dim=0)")
            return None
        if labels is None:
            raise ValueError(f"this generator is class-conditional (c_dim={self.c_dim}): give labels= "
                             f"(class indices (N,) or probability vectors (N, {self.c_dim}))")
        return label_vectors(labels, self.c_dim, n)

    def mapping(self, z, labels=None) -> jax.Array:
        """The mapping network: z (N, D) (and, when conditional, ``labels``) -> w (N, D)."""
        z = jnp.asarray(z, wide_dtype(self.dtype))
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"z must be (N, {self.style_dim}), got {z.shape}")
        return _mapping(self.module, self.variables, z, self._labels_for(labels, z.shape[0], False))

    def mean_latent(self, n: int, key: jax.Array, labels=None) -> jax.Array:
        """Mean of ``n`` mapped normal z: the usual truncation center, shape (1, D).
        A conditional generator averages over ``labels`` (default: the classes in turn,
        ``i mod c_dim``, i.e. a uniform class prior)."""
        z = jax.random.normal(key, (n, self.style_dim))
        if self.c_dim and labels is None:
            labels = np.arange(n) % self.c_dim
        return jnp.mean(self.mapping(z, labels), axis=0, keepdims=True)

    def random_noise(self, key: jax.Array, batch: int) -> list[jax.Array]:
        """One set of normal noise maps (batch, h, w, 1) per layer."""
        keys = jax.random.split(key, self.num_layers)
        return [jax.random.normal(k, (batch, h, w, 1)) for k, (h, w) in zip(keys, noise_shapes(self.size))]

    # --- checks -------------------------------------------------------------------
    def _check_styles(self, styles, input_is_latent):
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"give one code, or two for style mixing; got {len(styles)}")
        for s in styles:
            if s.shape[-1] != self.style_dim:
                raise ValueError(f"codes must end in the style dimension {self.style_dim}, got {s.shape}")
            if s.ndim == 3:
                if not input_is_latent:
                    raise ValueError("W+ codes (N, L, D) need input_is_latent=True")
                if s.shape[1] < self.n_latent:
                    raise ValueError(f"W+ codes need at least {self.n_latent} entries, got {s.shape[1]}")
                if len(styles) == 2:
                    raise ValueError("style mixing takes (N, D) codes, not W+")
            elif s.ndim != 2:
                raise ValueError(f"codes must be (N, D) or (N, L, D), got {s.shape}")
        if len({s.shape[0] for s in styles}) != 1:
            raise ValueError("both codes of a style mix need the same batch size")

    def _check_noise(self, noise):
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise maps, got {len(noise)}")
        out = []
        for i, (n, (h, w)) in enumerate(zip(noise, noise_shapes(self.size))):
            n = jnp.asarray(n, wide_dtype(self.dtype))  # the compute dtype (float64 stays float64)
            if n.ndim == 4 and n.shape[-1] != 1 and n.shape[1] == 1:
                n = jnp.transpose(n, (0, 2, 3, 1))  # reference NCHW
            if n.ndim != 4 or n.shape[1:] != (h, w, 1):
                raise ValueError(f"noise map {i} must be (N, {h}, {w}, 1), got {n.shape}")
            out.append(n)
        return out

    def __repr__(self):
        c = self.config
        cond = f", c_dim={self.c_dim}" if self.c_dim else ""
        return (f"GeneratorModel(size={c['size']}, style_dim={c['style_dim']}, n_mlp={c['n_mlp']}, "
                f"n_latent={self.n_latent}{cond}, dtype={self.dtype.name})")


class DiscriminatorModel:
    """A StyleGAN2 discriminator with its parameters: ``D(images) -> logits (N, 1)``."""

    kind = "discriminator"

    def __init__(self, config: dict, variables: dict, dtype: Any = jnp.float32):
        self.config = _plain_config(config)
        self.dtype = jnp.dtype(dtype)
        self.module = Discriminator(**_module_kwargs(self.config), dtype=self.dtype)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

    @property
    def size(self) -> int:
        return self.config["size"]

    @property
    def c_dim(self) -> int:
        return int(self.config.get("c_dim", 0))

    def astype(self, dtype) -> "DiscriminatorModel":
        """The same weights with another compute dtype (parameters stay float32)."""
        return DiscriminatorModel(self.config, self.variables, dtype)

    def __call__(self, images, labels=None) -> jax.Array:
        """Logits (N, 1); a projection discriminator (``c_dim > 0``) also takes
        ``labels``, class indices (N,) or probability vectors (N, c_dim)."""
        images = jnp.asarray(images, wide_dtype(self.dtype))
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"images must be (N, {self.size}, {self.size}, 3), got {images.shape}")
        if self.c_dim:
            if labels is None:
                raise ValueError(f"this discriminator is class-conditional (c_dim={self.c_dim}): give labels")
            labels = label_vectors(labels, self.c_dim, images.shape[0])
        elif labels is not None:
            raise ValueError("labels given to an unconditional discriminator (c_dim=0)")
        return _discriminate(self.module, self.variables, images, labels)

    def __repr__(self):
        return f"DiscriminatorModel(size={self.size}, dtype={self.dtype.name})"


def _plain_config(config: dict) -> dict:
    """JSON-able copy: tuples of pairs stay lists of lists in JSON, normalised back here.
    ``c_dim`` is recorded only for conditional networks (an unconditional model's config
    is what it was before conditioning existed)."""
    out = dict(config)
    if "c_dim" in out:
        out["c_dim"] = int(out["c_dim"] or 0)
        if not out["c_dim"]:
            del out["c_dim"]
    if out.get("channels") is not None:
        out["channels"] = [[int(r), int(c)] for r, c in out["channels"]]
    if "blur_kernel" in out:
        out["blur_kernel"] = [float(t) for t in out["blur_kernel"]]
    return out


def _module_kwargs(config: dict) -> dict:
    kw = dict(config)
    if kw.get("channels") is not None:
        kw["channels"] = tuple((int(r), int(c)) for r, c in kw["channels"])
    if "blur_kernel" in kw:
        kw["blur_kernel"] = tuple(float(t) for t in kw["blur_kernel"])
    return kw


def _config_dict(cfg) -> dict:
    return dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)


@functools.partial(jax.jit, static_argnames=("module",),
                   compiler_options={"xla_backend_optimization_level": 0})
def _jit_init(module, rngs, args, kwargs):
    return module.init(rngs, *args, **kwargs)


def _init_variables(module, key, *args, **kwargs) -> dict:
    """``module.init`` as one compiled call. Eagerly, every parameter's random draw is
    its own small XLA program (hundreds of compilations: minutes on a CPU for the tiny
    encoder); here they are one, compiled once per architecture, without LLVM's
    optimisations (it runs once; with them the tiny encoder's init compiles in 20.9 s
    instead of 13.7 s on a cold cache). Host numpy arrays out."""
    variables = _jit_init(module, {"params": key}, args, kwargs)
    return jax.tree_util.tree_map(np.asarray, dict(variables))


def init_generator(cfg, key: jax.Array, dtype: Any = jnp.float32) -> GeneratorModel:
    """A freshly initialised generator (reference init: N(0, 1) weights, modulation bias 1,
    N(0, 1) noise buffers) from a config section such as ``config.model.generator``."""
    cfg = _plain_config(_config_dict(cfg))
    module = Generator(**_module_kwargs(cfg))
    c_dim = cfg.get("c_dim", 0)
    labels = jnp.full((1, c_dim), 1.0 / c_dim) if c_dim else None
    variables = _init_variables(module, key, jnp.zeros((1, cfg.get("style_dim", 512))), labels=labels)
    return GeneratorModel(cfg, variables, dtype)


def init_discriminator(cfg, key: jax.Array, dtype: Any = jnp.float32) -> DiscriminatorModel:
    """A freshly initialised discriminator from a config section."""
    cfg = _plain_config(_config_dict(cfg))
    module = Discriminator(**_module_kwargs(cfg))
    size = cfg["size"]
    c_dim = cfg.get("c_dim", 0)
    labels = jnp.full((1, c_dim), 1.0 / c_dim) if c_dim else None
    variables = _init_variables(module, key, jnp.zeros((1, size, size, 3)), labels)
    return DiscriminatorModel(cfg, variables, dtype)


@functools.partial(jax.jit, static_argnames=("module",))
def _encode(module, variables, images):
    return module.apply(variables, images)


def pass_variables(variables: dict, t: int) -> dict:
    """An encoder's variables for pass ``t``. An iterative (ReStyle) encoder keeps one set
    of BatchNorm running statistics per trained pass (a leading axis on every
    ``batch_stats`` array: its passes see different inputs, the first always the same
    start image, so one shared set fits none of them); passes beyond the trained ones
    reuse the last set. A pSp encoder's variables are returned as they are."""
    stats = variables.get("batch_stats")
    leaves = jax.tree_util.tree_leaves(stats) if stats else []
    if not leaves or leaves[0].ndim == 1:
        return variables
    last = leaves[0].shape[0] - 1
    return {**variables, "batch_stats": jax.tree_util.tree_map(lambda a: a[min(t, last)], stats)}


def restyle_start(gen_module, gen_variables, offset, n: int, size: int) -> jax.Array:
    """ReStyle's first "current reconstruction": the image of the codes' origin
    (``latent_avg``; zero codes for a model that does not start from it), (n, size, size, 3)."""
    n_latent = gen_module.n_latent
    w0 = jnp.broadcast_to(jnp.asarray(offset, jnp.float32)[None], (1, n_latent, gen_module.style_dim))
    y0 = gen_module.apply(gen_variables, [w0], input_is_latent=True, randomize_noise=False).astype(jnp.float32)
    if y0.shape[1:3] != (size, size):
        y0 = jax.image.resize(y0, (1, size, size, 3), "bilinear")
    return jnp.broadcast_to(y0, (n, size, size, 3))


def encode_images(enc_module, enc_variables, gen_module, gen_variables, offset, images, iterations: int):
    """Raw codes (N, n_styles, D) of images (N, S, S, 3) in [-1, 1] (traceable; call it
    under ``jit``). ``iterations`` 0: one pass of a pSp encoder. ``iterations`` N > 0: an
    iterative encoder (ReStyle, Alaluf et al. 2021) that sees the image beside the current
    reconstruction and adds a residual to the codes, N times from the codes' origin:
    ``raw_{t+1} = raw_t + E([x, G(raw_t + offset)])``, ``raw_0 = 0``. ``offset``: what is
    added to raw codes before decoding, (1 or n_latent, D); the decoder runs with its
    stored noise, so the codes are a deterministic function of the images."""
    if iterations == 0:
        return enc_module.apply(enc_variables, images)
    n_latent, size = gen_module.n_latent, images.shape[1]
    images = images.astype(jnp.float32)
    y = restyle_start(gen_module, gen_variables, offset, images.shape[0], size)
    raw = None
    for t in range(iterations):
        delta = enc_module.apply(pass_variables(enc_variables, t),
                                 jnp.concatenate([images, y], axis=-1).astype(images.dtype))
        raw = delta if raw is None else raw + delta
        if t + 1 < iterations:
            y = gen_module.apply(gen_variables, [raw[:, :n_latent] + offset], input_is_latent=True,
                                 randomize_noise=False).astype(jnp.float32)
            if y.shape[1:3] != (size, size):
                y = jax.image.resize(y, (y.shape[0], size, size, 3), "bilinear")
    return raw


_encode_images = jax.jit(encode_images, static_argnames=("enc_module", "gen_module", "iterations"))


class EncoderModel:
    """A pSp encoder with its parameters and BatchNorm statistics:
    ``E(images) -> raw W+ codes (N, n_styles, style_dim)`` (offsets from ``latent_avg``
    when the checkpoint was trained with ``start_from_latent_avg``).

    ``images`` are NHWC in [-1, 1] at ``E.input_size`` (see
    :func:`sage_jax.images.load_image` for files of any size and mode).
    """

    kind = "encoder"

    def __init__(self, config: dict, variables: dict, dtype: Any = jnp.float32):
        self.config = dict(config)
        self.config["widths"] = [int(w) for w in self.config["widths"]]
        self.dtype = jnp.dtype(dtype)
        self.module = build_encoder(self.config, dtype=self.dtype)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

    @property
    def input_size(self) -> int:
        return self.config["input_size"]

    @property
    def input_nc(self) -> int:
        """Input channels: 3 (an image), or 6 for an iterative (ReStyle) encoder."""
        return int(self.config.get("input_nc", 3))

    @property
    def n_styles(self) -> int:
        return self.config.get("n_styles", 1)

    @property
    def style_dim(self) -> int:
        return self.config["style_dim"]

    def astype(self, dtype) -> "EncoderModel":
        """The same weights with another compute dtype (parameters stay float32)."""
        return EncoderModel(self.config, self.variables, dtype)

    @property
    def stat_sets(self) -> int:
        """Sets of BatchNorm statistics: 1, or one per trained pass of an iterative encoder."""
        leaves = jax.tree_util.tree_leaves(self.variables.get("batch_stats") or {})
        return 1 if not leaves or leaves[0].ndim == 1 else int(leaves[0].shape[0])

    def __call__(self, images, pass_index: int = 0) -> jax.Array:
        """Raw codes of ``images``; for an iterative encoder, inputs of 6 channels (image
        and current reconstruction) and the BatchNorm statistics of pass ``pass_index``."""
        images = jnp.asarray(images, wide_dtype(self.dtype))
        s, c = self.input_size, self.input_nc
        if images.ndim != 4 or images.shape[1:] != (s, s, c):
            if c != 3 and images.ndim == 4 and images.shape[1:] == (s, s, 3):
                raise ValueError(f"this is an iterative (ReStyle) encoder: it takes an image and a "
                                 f"reconstruction ({c} channels); encode images through its pSp model "
                                 f"(PSPModel.encode), which runs the iterations with the decoder")
            raise ValueError(f"images must be (N, {s}, {s}, {c}) in [-1, 1], got {images.shape}")
        return _encode(self.module, pass_variables(self.variables, int(pass_index)), images)

    def __repr__(self):
        c = self.config
        extra = f", {self.input_nc} input channels" if self.input_nc != 3 else ""
        return (f"EncoderModel({c['kind']}, {c['mode']}{c['num_layers']}, input {c['input_size']} px{extra}, "
                f"{self.n_styles} styles x {c['style_dim']})")


class PSPModel:
    """A pSp / AGE / SAGE network: encoder, StyleGAN2 decoder and ``latent_avg``.

    ``config`` holds what the checkpoint's ``opts`` say (``output_size``,
    ``encoder_type``, ``start_from_latent_avg``, ``A_length``, ...); ``ax`` the raw
    arrays of the AGE/SAGE dictionary (``ax.*``) when present.
    """

    def __init__(self, encoder: EncoderModel | None, decoder: GeneratorModel, latent_avg,
                 config: dict, ax: dict | None = None):
        self.encoder = encoder
        self.decoder = decoder
        self.config = dict(config)
        self.ax = ax
        self.latent_avg = None if latent_avg is None else self._check_latent_avg(np.asarray(latent_avg, np.float32))
        iters = self.config.get("restyle_iterations", 0)
        if isinstance(iters, bool) or int(iters) != iters or iters < 0:
            raise ValueError(f"restyle_iterations must be a whole number >= 0, got {iters!r}")
        self.config["restyle_iterations"] = int(iters)
        if encoder is not None and encoder.input_nc not in (3, 6):
            raise ValueError(f"encoders take 3 (image) or 6 (image + reconstruction) channels, "
                             f"got {encoder.input_nc}")
        if encoder is not None and (encoder.input_nc == 6) != (int(iters) > 0):
            raise ValueError(f"an encoder with {encoder.input_nc} input channels needs restyle_iterations "
                             + ("> 0 (it is iterative)" if encoder.input_nc == 6 else "0 (it is not iterative)")
                             + f", got {iters}")

    def _check_latent_avg(self, avg: np.ndarray) -> np.ndarray:
        d, n = self.decoder.style_dim, self.decoder.n_latent
        if avg.ndim == 1:
            avg = avg[None]
        if avg.ndim != 2 or avg.shape[-1] != d:
            raise ValueError(f"latent_avg must be (D,), (1, D) or (L, D) with D={d}; got {avg.shape}")
        if avg.shape[0] not in (1,) and avg.shape[0] < n:
            raise ValueError(f"latent_avg has {avg.shape[0]} rows, the decoder needs {n}")
        return avg

    @property
    def n_latent(self) -> int:
        return self.decoder.n_latent

    def absolute_codes(self, raw_codes) -> jax.Array:
        """Raw encoder codes -> the W+ codes the decoder takes (N, n_latent, D): the first
        ``n_latent`` styles, plus ``latent_avg`` when the model starts from it."""
        raw = jnp.asarray(raw_codes, jnp.float32)
        if raw.ndim == 2:
            raw = raw[:, None, :]
        if raw.shape[1] not in (1,) and raw.shape[1] < self.n_latent:
            raise ValueError(f"codes have {raw.shape[1]} styles, the decoder needs {self.n_latent}")
        raw = jnp.broadcast_to(raw[:, : self.n_latent], (raw.shape[0], self.n_latent, raw.shape[-1]))
        if self.config.get("start_from_latent_avg", True):
            if self.latent_avg is None:
                raise ValueError("this model starts from latent_avg but the checkpoint has none")
            avg = jnp.asarray(self.latent_avg)
            avg = avg[: self.n_latent] if avg.shape[0] > 1 else avg
            raw = raw + avg[None]
        return raw

    @property
    def restyle_iterations(self) -> int:
        """Passes of an iterative (ReStyle) encoder; 0 for a pSp encoder (one pass)."""
        return self.config["restyle_iterations"]

    def code_offset(self) -> jax.Array:
        """What :meth:`absolute_codes` adds to raw codes: (1 or n_latent, D)."""
        G = self.decoder
        return self.absolute_codes(jnp.zeros((1, G.n_latent, G.style_dim)))[0]

    def encode(self, images, iterations: int | None = None) -> jax.Array:
        """Images (N, S, S, 3) in [-1, 1] at the encoder's input size -> raw codes
        (N, n_styles, D): one pass of a pSp encoder, or ``iterations`` (default: the
        model's ``restyle_iterations``) passes of an iterative (ReStyle) one."""
        if self.encoder is None:
            raise ValueError("this model was loaded without its encoder")
        E = self.encoder
        if not self.restyle_iterations:
            return E(images)
        n = self.restyle_iterations if iterations is None else iterations
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"an iterative encoder needs iterations >= 1, got {n!r}")
        images = jnp.asarray(images, wide_dtype(E.dtype))
        s = E.input_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"images must be (N, {s}, {s}, 3) in [-1, 1], got {images.shape}")
        G = self.decoder
        return _encode_images(E.module, E.variables, G.module, G.variables, self.code_offset(), images, int(n))

    def invert(self, images) -> tuple[jax.Array, jax.Array]:
        """Images -> (raw codes (N, n_styles, D), absolute W+ codes (N, n_latent, D))."""
        raw = self.encode(images)
        return raw, self.absolute_codes(raw)

    def reconstruct(self, images, noise="stored", key=None) -> jax.Array:
        """``decoder(invert(images))``: the pSp reconstruction (N, size, size, 3)."""
        _, codes = self.invert(images)
        return self.decoder(codes, input_is_latent=True, noise=noise, key=key)

    def __repr__(self):
        return f"PSPModel(encoder={self.encoder!r}, decoder={self.decoder!r})"


def default_chunk(generator, memory_budget_mb: float = 1024.0) -> int:
    """Images per generator call that keep activations within about the budget
    (a rough count: the largest few feature maps of one image, float32, x3)."""
    ch = dict(map(tuple, generator.config["channels"])) if generator.config.get("channels") else {}
    per_image = sum(r * r * ch.get(r, 512) * 4 * 3 for r in (2 ** i for i in range(2, int(np.log2(generator.size)) + 1)))
    return int(max(1, min(256, memory_budget_mb * 2**20 // max(per_image, 1))))


# ------------------------------------------------------------- module builders
def _encoder_kwargs(cfg: dict) -> dict:
    """The constructor arguments of ``cfg['kind']`` found in ``cfg``."""
    fields = set(ENCODERS[cfg["kind"]].__dataclass_fields__) - {"parent", "name", "dtype"}
    kw = {k: v for k, v in cfg.items() if k in fields}
    if "widths" in kw:
        kw["widths"] = tuple(kw["widths"])
    return kw


def full_encoder_config(cfg: dict) -> dict:
    """``cfg`` completed with the module's defaults for every constructor argument."""
    module = build_encoder(cfg)
    fields = set(type(module).__dataclass_fields__) - {"parent", "name", "dtype"}
    out = {"kind": cfg["kind"], **{f: getattr(module, f) for f in sorted(fields)}}
    out["widths"] = list(out["widths"])
    return out


def build_encoder(cfg: dict, dtype=jnp.float32):
    if cfg.get("kind") not in ENCODERS:
        raise ValueError(f"unknown encoder kind {cfg.get('kind')!r}; one of {sorted(ENCODERS)}")
    return ENCODERS[cfg["kind"]](**_encoder_kwargs(cfg), dtype=dtype)


def build_dictionary(cfg: dict) -> AttributeDictionary:
    return AttributeDictionary(groups=tuple(tuple(int(i) for i in g) for g in cfg["groups"]),
                               style_dim=int(cfg["style_dim"]), a_length=int(cfg["a_length"]))


def init_encoder(cfg, key: jax.Array, dtype: Any = jnp.float32) -> EncoderModel:
    """A freshly initialised pSp encoder from a config section with ``kind`` (default
    ``GradualStyleEncoder``), ``num_layers``, ``mode``, ``input_size``, ``n_styles``,
    ``style_dim`` and ``widths``."""
    cfg = _config_dict(cfg)
    cfg.setdefault("kind", "GradualStyleEncoder")
    cfg = full_encoder_config(cfg)
    module = build_encoder(cfg)
    size = cfg.get("input_size", 256)
    variables = _init_variables(module, key, jnp.zeros((1, size, size, int(cfg.get("input_nc", 3)))))
    return EncoderModel(cfg, variables, dtype)


@functools.partial(jax.jit, static_argnames=("module",))
def _dictionary_apply(module, variables, dw):
    return module.apply(variables, dw)


class DictionaryModel:
    """The AGE/SAGE attribute dictionary: ``D(dw) -> (edited offsets (N, E, D), [group
    codes (N, l)])`` for W+ offsets ``dw`` (N, L, D) from the class embeddings.
    ``A`` is (E, D, l), rows in the order of ``edited_layers``."""

    kind = "dictionary"

    def __init__(self, config: dict, variables: dict, dtype: Any = jnp.float32):
        self.config = {"groups": [list(map(int, g)) for g in config["groups"]],
                       "style_dim": int(config["style_dim"]), "a_length": int(config["a_length"])}
        self.dtype = jnp.dtype(dtype)
        self.module = build_dictionary(self.config)
        self.variables = jax.tree_util.tree_map(jnp.asarray, variables)

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        return self.module.groups

    @property
    def edited_layers(self) -> tuple[int, ...]:
        from sage_jax.nn.dictionary import edited_layers

        return edited_layers(self.groups)

    @property
    def A(self) -> jax.Array:
        return self.variables["params"]["A"]

    @property
    def a_length(self) -> int:
        return self.config["a_length"]

    def __call__(self, dw):
        dw = jnp.asarray(dw, jnp.float32)
        need = max(self.edited_layers) + 1
        if dw.ndim != 3 or dw.shape[1] < need or dw.shape[2] != self.config["style_dim"]:
            raise ValueError(f"offsets must be (N, >={need}, {self.config['style_dim']}), got {dw.shape}")
        return _dictionary_apply(self.module, self.variables, dw)

    def __repr__(self):
        return f"DictionaryModel(groups={self.config['groups']}, A_length={self.a_length})"


def init_dictionary(cfg, key: jax.Array) -> DictionaryModel:
    """A freshly initialised dictionary from a config section with ``groups``,
    ``style_dim`` and ``a_length`` (A ~ N(0, 1), PyTorch-style Linear init)."""
    cfg = _config_dict(cfg)
    module = build_dictionary(cfg)
    n_layers = max(i for g in cfg["groups"] for i in g) + 1
    variables = _init_variables(module, key, jnp.zeros((1, n_layers, cfg["style_dim"])))
    return DictionaryModel(cfg, variables)
