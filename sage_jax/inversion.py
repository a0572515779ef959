"""Refining encoder inversions by optimisation (none of pSp, AGE or SAGE offers it).

The encoder's code of an image is a fast, approximate inversion. :func:`refine_codes`
starts from it and optimises each image's W+ code on the reconstruction loss (MSE, plus
LPIPS when its weights are given) with Adam, the decoder frozen and run with its stored
noise, so the result is a deterministic function of its inputs. Per-image losses are
summed and Adam is elementwise, so images never interact: an image's refined code is
the same whichever images share its chunk.

Codes that make the class statistics and codes of the shots must be made the same way
(the statistics are compared with the shots' codes). :class:`InversionSetting` is that
way, recorded in the statistics file; :class:`Inverter` is an encoder with a setting,
``images -> raw codes``. Steps 0 is the encoder's codes exactly, as before.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sage_jax.models import default_chunk

DEFAULT_LR = 0.02        # Adam on W+ offsets; 0.01-0.05 all work on the tiny model
LPIPS_WEIGHT = 0.8       # pSp's lpips_lambda beside its l2_lambda 1.0


@dataclasses.dataclass(frozen=True)
class InversionSetting:
    """How images become raw codes: the encoder, then ``refine_steps`` Adam steps at
    ``refine_lr`` on MSE (+ LPIPS when ``lpips``). With 0 steps the other fields do not
    matter, and every 0-step setting is the same setting."""

    refine_steps: int = 0
    refine_lr: float = DEFAULT_LR
    lpips: bool = False

    def __post_init__(self):
        steps, lr = self.refine_steps, self.refine_lr
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"refine steps must be a whole number >= 0, got {steps!r}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"refine learning rate must be a positive number, got {lr!r}")
        object.__setattr__(self, "refine_steps", int(steps))
        object.__setattr__(self, "refine_lr", float(lr))
        object.__setattr__(self, "lpips", bool(self.lpips) and int(steps) > 0)

    @property
    def refines(self) -> bool:
        return self.refine_steps > 0

    def canonical(self) -> "InversionSetting":
        return self if self.refines else InversionSetting()

    def __eq__(self, other):
        if not isinstance(other, InversionSetting):
            return NotImplemented
        a, b = self.canonical(), other.canonical()
        return (a.refine_steps, a.refine_lr, a.lpips) == (b.refine_steps, b.refine_lr, b.lpips)

    def __hash__(self):
        c = self.canonical()
        return hash((c.refine_steps, c.refine_lr, c.lpips))

    def as_dict(self) -> dict:
        c = self.canonical()
        return {"refine_steps": c.refine_steps, "refine_lr": c.refine_lr, "lpips": c.lpips}

    @classmethod
    def from_dict(cls, d: dict | None) -> "InversionSetting":
        """From :meth:`as_dict` (or a config section); missing or empty: the encoder's
        codes (statistics files written before refinement existed)."""
        d = dict(d or {})
        unknown = set(d) - {"refine_steps", "refine_lr", "lpips"}
        if unknown:
            raise ValueError(f"unknown inversion setting(s) {sorted(unknown)}: "
                             f"use refine_steps, refine_lr, lpips")
        return cls(int(d.get("refine_steps", 0)), float(d.get("refine_lr", DEFAULT_LR)), bool(d.get("lpips", False)))

    def describe(self) -> str:
        if not self.refines:
            return "the encoder's codes (no refinement)"
        return (f"{self.refine_steps} refinement steps at lr {self.refine_lr:g} on MSE"
                + (" + LPIPS" if self.lpips else ""))

    def flags(self) -> str:
        """The command-line flags that give this setting."""
        if not self.refines:
            return "--refine-steps 0"
        return f"--refine-steps {self.refine_steps} --refine-lr {self.refine_lr:g}" + (
            " --lpips ..." if self.lpips else "")


def check_setting(made: InversionSetting, used: InversionSetting, what: str = "the class statistics") -> None:
    """Refuse codes made one way compared with statistics made another."""
    if made != used:
        raise ValueError(f"{what} were made with {made.describe()}, but the codes here would be made with "
                         f"{used.describe()}: codes of the statistics and of the shots must be made the same "
                         f"way; pass {made.flags()} (or recompute the statistics with {used.flags()})")


def code_offset(psp) -> jax.Array:
    """What :meth:`PSPModel.absolute_codes` adds to raw codes: (1 or n_latent, D)."""
    return psp.code_offset()


def _reconstruct(module, variables, w):
    return module.apply(variables, [w], input_is_latent=True, noise=None, randomize_noise=False)


def _refine_loss(module, variables, avg, targets, c, lpips_module, lpips_vars):
    """The sum over images of each image's MSE (+ LPIPS_WEIGHT * LPIPS): every image has
    its own problem, and its gradient touches only its own code."""
    recon = _reconstruct(module, variables, c + avg)
    per_image = jnp.mean(jnp.square(recon.astype(jnp.float32) - targets), axis=(1, 2, 3))
    if lpips_module is not None:
        per_image = per_image + LPIPS_WEIGHT * lpips_module.apply(lpips_vars, recon, targets)
    return jnp.sum(per_image)


@functools.partial(jax.jit, static_argnames=("module", "lpips_module"))
def _refine_step(module, variables, avg, targets, codes, adam_state, lr, lpips_module=None, lpips_vars=None):
    """One Adam step on codes (N, n_latent, D)."""
    g = jax.grad(_refine_loss, argnums=4)(module, variables, avg, targets, codes, lpips_module, lpips_vars)
    updates, adam_state = optax.scale_by_adam().update(g, adam_state, codes)
    return codes - lr * updates, adam_state


def _refine_chunk(module, variables, avg, targets, codes, steps: int, lr, lpips_module=None, lpips_vars=None):
    """``steps`` Adam steps at ``lr`` on codes (N, n_latent, D), each step one compiled
    call from a Python loop. Not one ``lax.fori_loop``: on XLA:CPU the decoder's
    convolutions inside a while loop ran 11 times slower than the same step called from
    Python (21 ms against 1.9 ms per image and step for the tiny decoder on one core,
    ``scripts/benchmark.py --only refine``); on a GPU the per-step dispatch is negligible."""
    state = optax.scale_by_adam().init(codes)
    for _ in range(int(steps)):
        codes, state = _refine_step(module, variables, avg, targets, codes, state, lr, lpips_module, lpips_vars)
    return codes


def default_refine_chunk(decoder) -> int:
    """Images per refinement call: backpropagation through the decoder keeps several
    activations per layer alive, so a quarter of generation's 1 GB budget."""
    return default_chunk(decoder, 256.0)


def refine_codes(decoder, latent_avg, images, raw_codes, steps: int, lr: float = DEFAULT_LR, lpips=None,
                 chunk: int | None = None) -> jax.Array:
    """Raw codes (N, n_styles, D) refined from the encoder's ``raw_codes`` so that
    ``decoder(raw[:, :n_latent] + latent_avg)`` (stored noise) reconstructs ``images``
    (N, S, S, 3) in [-1, 1] better: ``steps`` Adam steps at ``lr`` on each image's MSE,
    plus ``LPIPS_WEIGHT`` x LPIPS when ``lpips`` (an LPIPSModel) is given. Only the
    first ``n_latent`` styles reach the decoder, so only they change; the rest stay as
    the encoder gave them. ``latent_avg``: what is added to raw codes (``code_offset``;
    None for a model that does not start from it). Images are refined at most ``chunk``
    at a time, in equal chunks (one compiled shape, the last chunk padded); ``steps`` 0
    returns ``raw_codes`` unchanged. No randomness: the same inputs give the same codes."""
    raw = jnp.asarray(raw_codes)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"refine steps must be a whole number >= 0, got {steps!r}")
    if not (math.isfinite(float(lr)) and lr > 0):
        raise ValueError(f"refine learning rate must be positive, got {lr!r}")
    if int(steps) == 0:
        return raw
    images = jnp.asarray(images, jnp.float32)
    n_latent, D = decoder.n_latent, decoder.style_dim
    if raw.ndim != 3 or raw.shape[1] < n_latent or raw.shape[2] != D:
        raise ValueError(f"raw codes must be (N, >={n_latent}, {D}), got {raw.shape}")
    if images.ndim != 4 or images.shape[0] != raw.shape[0] or images.shape[-1] != 3:
        raise ValueError(f"images must be (N={raw.shape[0]}, S, S, 3), got {images.shape}")
    size = decoder.size
    if images.shape[1:3] != (size, size):
        images = jax.image.resize(images, (images.shape[0], size, size, 3), "bilinear")
    avg = jnp.zeros((1, D), jnp.float32) if latent_avg is None else jnp.asarray(latent_avg, jnp.float32)
    avg = avg[:n_latent] if avg.ndim == 2 and avg.shape[0] > 1 else avg.reshape(-1, D)[:1]
    N = raw.shape[0]
    chunk = int(min(chunk or default_refine_chunk(decoder), N))
    chunk = -(-N // -(-N // chunk))   # as many chunks as needed, evened out: the least padding
    lp_mod = None if lpips is None else lpips.module
    lp_vars = None if lpips is None else lpips.variables
    start_codes = raw[:, :n_latent].astype(jnp.float32)
    out = []
    for s in range(0, N, chunk):
        c, x = start_codes[s:s + chunk], images[s:s + chunk]
        n = c.shape[0]
        if n < chunk:
            c = jnp.concatenate([c, jnp.repeat(c[-1:], chunk - n, axis=0)])
            x = jnp.concatenate([x, jnp.repeat(x[-1:], chunk - n, axis=0)])
        r = _refine_chunk(decoder.module, decoder.variables, avg, x, c, int(steps),
                          jnp.asarray(lr, jnp.float32), lp_mod, lp_vars)
        out.append(r[:n])
    refined = jnp.concatenate(out).astype(raw.dtype)
    return raw.at[:, :n_latent].set(refined)


class Inverter:
    """``images -> raw codes (N, n_styles, D)``: a pSp model's encoder (all its passes,
    for an iterative one), refined as its ``setting`` says. Has the encoder's
    ``n_styles``, ``style_dim``, ``input_size`` and ``variables`` (so it stands where an
    encoder does)."""

    def __init__(self, psp, setting: InversionSetting = InversionSetting(), lpips=None, chunk: int | None = None):
        if psp.encoder is None:
            raise ValueError("inversion needs the model's encoder")
        if lpips is not None and setting.refines and not setting.lpips:
            setting = dataclasses.replace(setting, lpips=True)
        if setting.lpips and lpips is None:
            raise ValueError(f"{setting.describe()} needs LPIPS weights (--lpips, or --lpips-vgg with --lpips-heads)")
        self.psp, self.encoder, self.setting = psp, psp.encoder, setting
        self.lpips = lpips if setting.lpips else None
        self.chunk = chunk
        self._offset = code_offset(psp) if setting.refines else None

    n_styles = property(lambda self: self.encoder.n_styles)
    style_dim = property(lambda self: self.encoder.style_dim)
    input_size = property(lambda self: self.encoder.input_size)
    variables = property(lambda self: self.encoder.variables)

    def __call__(self, images) -> jax.Array:
        raw = self.psp.encode(images)
        if not self.setting.refines:
            return raw
        return refine_codes(self.psp.decoder, self._offset, images, raw, self.setting.refine_steps,
                            self.setting.refine_lr, self.lpips, self.chunk)

    def __repr__(self):
        return f"Inverter({self.setting.describe()})"


class CachedInverter:
    """An :class:`Inverter` that remembers the codes of the images it has seen (keyed by
    their bytes), so work that reads the same images twice (the class embeddings, then
    the back-projected codes' moments) refines each image once. Stands where the
    Inverter does (same setting, same encoder attributes); the cache holds one small
    code per image."""

    def __init__(self, inverter: Inverter):
        self.inverter = inverter
        self._codes: dict[bytes, np.ndarray] = {}
        self.hits = 0

    setting = property(lambda self: self.inverter.setting)
    n_styles = property(lambda self: self.inverter.n_styles)
    style_dim = property(lambda self: self.inverter.style_dim)
    input_size = property(lambda self: self.inverter.input_size)
    variables = property(lambda self: self.inverter.variables)

    def __call__(self, images) -> jax.Array:
        given = images
        images = np.asarray(images, np.float32)
        keys = [hashlib.sha1(im.tobytes()).digest() for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self._codes]
        if missing:
            # the whole batch when anything is new: one compiled shape, as the Inverter alone
            # (and on the devices the batch was given on: a batch split over the local
            # devices, sage_jax.parallel.put_local, stays split)
            codes = np.asarray(self.inverter(given if isinstance(given, jax.Array) else images))
            for i in missing:
                self._codes[keys[i]] = codes[i]
        self.hits += len(images) - len(missing)
        return jnp.asarray(np.stack([self._codes[k] for k in keys]))

    def __repr__(self):
        return f"CachedInverter({self.inverter!r}, {len(self._codes)} images)"


def reconstruction_mse(psp, images, raw_codes, chunk: int = 64) -> np.ndarray:
    """Per-image MSE (N,) of ``decoder(raw codes)`` (stored noise) against ``images``."""
    G = psp.decoder
    avg = code_offset(psp)
    out = []
    for s in range(0, len(images), chunk):
        x = jnp.asarray(images[s:s + chunk], jnp.float32)
        if x.shape[1:3] != (G.size, G.size):
            x = jax.image.resize(x, (x.shape[0], G.size, G.size, 3), "bilinear")
        r = _reconstruct_jit(G.module, G.variables, jnp.asarray(raw_codes[s:s + chunk])[:, :G.n_latent] + avg)
        out.append(np.asarray(jnp.mean(jnp.square(r - x), axis=(1, 2, 3))))
    return np.concatenate(out)


_reconstruct_jit = jax.jit(_reconstruct, static_argnums=0)
