"""Few-shot generation with SAGE (and AGE, SAGE-Q, SAGE-I): from the codes of K shots of
each unseen class to many W+ codes and images.

Everything from the shots' codes to the edited W+ codes is one jitted computation,
vmapped over queries and samples (:func:`sample_codes`); the generator then runs in
fixed-size chunks (:meth:`SageGenerator.decode`), so memory stays bounded however
many images are asked for. Sample ``j`` of query ``q`` draws from
``fold_in(fold_in(key, q), j)``: the same key gives the same images, whatever the
chunking.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sage_jax.sage import editing as ed
from sage_jax.statistics import ClassStatistics, fingerprint


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """Generation hyper-parameters (paper Sec. 4 defaults: t_B 10, t_C 30 for 1-shot and
    20 for 3-shot, t_A 50, alpha 1; the best NAS in the paper used alpha 2).

    ``t_B`` may list several values: sample ``j`` edits from the class embedding mapped
    with ``t_B[j % len(t_B)]`` (the paper edits from several mappings for diversity);
    retrieval always uses ``retrieval_t_B``."""

    mode: str = "sage"
    t_B: tuple[int, ...] = (10,)
    retrieval_t_B: int = 10
    t_C: int = 30
    t_A: int | None = 50
    alpha: float = 1.0

    def __post_init__(self):
        ed.get_mode(self.mode)
        t_B = (self.t_B,) if isinstance(self.t_B, int) else tuple(int(t) for t in self.t_B)
        object.__setattr__(self, "t_B", t_B)
        if not t_B or min(t_B) < 1:
            raise ValueError(f"t_B must be positive, got {t_B}")


@flax.struct.dataclass
class EditingState:
    """Arrays the sampler needs: class embeddings (S, L, D), their per-layer singular
    basis (L, r, D), the per-class moments of n_hat, and the dictionary A (E, D, l)."""

    embeddings: jax.Array
    basis: jax.Array
    moments: ed.CodeMoments
    A: jax.Array


def editing_state(stats: ClassStatistics, A) -> EditingState:
    if stats.moments is None:
        raise ValueError("the class statistics have no back-projected codes: run "
                         "'sage-jax embed' with a dictionary first")
    emb = jnp.asarray(stats.embeddings, jnp.float32)
    moments = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), stats.moments)
    return EditingState(emb, ed.relevant_basis(emb), moments, jnp.asarray(A, jnp.float32))


def check_options(opts: SampleOptions, state: EditingState, n_shots: int) -> None:
    """Refuse impossible settings before any work starts."""
    S = state.embeddings.shape[0]
    r = state.basis.shape[1]
    l = state.A.shape[-1]
    mode = ed.get_mode(opts.mode)
    if mode.adaptive and not 1 <= opts.t_C <= S:
        raise ValueError(f"t_C={opts.t_C} must lie in [1, {S}] (the number of seen classes)")
    if mode.mapping and max(opts.t_B + (opts.retrieval_t_B,)) > r:
        raise ValueError(f"t_B={max(opts.t_B + (opts.retrieval_t_B,))} exceeds the {r} singular directions "
                         f"the class embeddings have")
    if opts.t_A is not None and not 1 <= opts.t_A <= l:
        raise ValueError(f"t_A={opts.t_A} must lie in [1, {l}] (the dictionary's A_length)")
    if n_shots < 1:
        raise ValueError("give at least one shot")


@functools.partial(jax.jit, static_argnames=("n_samples", "opts", "layers"))
def sample_codes(key: jax.Array, state: EditingState, shots: jax.Array, *, n_samples: int,
                 opts: SampleOptions, layers: tuple[int, ...]) -> jax.Array:
    """Edited raw W+ codes (Q, n_samples, L, D) for ``shots`` (Q, K, L, D), raw codes of
    K shots of each of Q unseen classes (Eq. 16-20)."""
    mode = ed.get_mode(opts.mode)
    S = state.embeddings.shape[0]
    K = shots.shape[1]

    def per_query(qkey, w):  # w: (K, L, D)
        query = jnp.mean(w, axis=0)
        if mode.mapping:
            bases = jnp.stack([ed.map_embedding(w, state.basis, t) for t in opts.t_B])
            probe = ed.map_embedding(w, state.basis, opts.retrieval_t_B)
        else:
            bases, probe = None, query
        if mode.adaptive:
            idx = ed.similar_classes(probe, state.embeddings, opts.t_C)
            weights = jnp.zeros((S,), jnp.float32).at[idx].set(1.0)
        else:
            weights = jnp.ones((S,), jnp.float32)
        mean, mean_abs, cov = ed.pooled_statistics(state.moments, weights)
        mask = ed.direction_mask(mean_abs, opts.t_A) if mode.adaptive else jnp.ones_like(mean_abs)
        factor = ed.gaussian_factor(cov)

        def one(j):
            n = ed.draw_codes(jax.random.fold_in(qkey, j), mean, factor)
            if mode.mapping:
                base = bases[j % len(opts.t_B)]
            elif mode.name == "age":
                base = w[j % K]          # AGE edits each shot's own code
            else:
                base = query             # SAGE-I: the (mean) query code, unmapped
            return ed.apply_edit(base, n, mask, state.A, layers, opts.alpha)

        return jax.vmap(one)(jnp.arange(n_samples))

    qkeys = jax.vmap(lambda q: jax.random.fold_in(key, q))(jnp.arange(shots.shape[0]))
    return jax.vmap(per_query)(qkeys, shots)


def default_chunk(generator, memory_budget_mb: float = 1024.0) -> int:
    """Images per generator call that keep activations within about the budget
    (a rough count: the largest few feature maps of one image, float32, x3)."""
    ch = dict(map(tuple, generator.config["channels"])) if generator.config.get("channels") else {}
    per_image = sum(r * r * ch.get(r, 512) * 4 * 3 for r in (2 ** i for i in range(2, int(np.log2(generator.size)) + 1)))
    return int(max(1, min(256, memory_budget_mb * 2**20 // max(per_image, 1))))


class SageGenerator:
    """SAGE generation from a pSp/AGE/SAGE model, a dictionary and class statistics.

    ``check=True`` refuses statistics made with another encoder or dictionary."""

    def __init__(self, psp, dictionary, stats: ClassStatistics, check: bool = True):
        if psp.encoder is None:
            raise ValueError("the model has no encoder")
        if check and stats.encoder_fingerprint != fingerprint(psp.encoder.variables):
            raise ValueError("the class statistics were made with a different encoder "
                             "(re-run 'sage-jax embed' with this checkpoint)")
        if stats.moments is None:
            raise ValueError("the class statistics have no back-projected codes: run "
                             "'sage-jax embed' with a dictionary first")
        if check and stats.dictionary_fingerprint != fingerprint(dictionary.variables):
            raise ValueError("the class statistics were made with a different dictionary "
                             "(re-run 'sage-jax embed --dictionary ...')")
        if stats.embeddings.shape[1:] != (psp.encoder.n_styles, psp.encoder.style_dim):
            raise ValueError(f"class embeddings {stats.embeddings.shape[1:]} do not fit the encoder's codes")
        self.psp, self.dictionary, self.stats = psp, dictionary, stats
        self.state = editing_state(stats, dictionary.A)
        self.layers = tuple(int(i) for i in dictionary.edited_layers)

    def encode(self, images) -> jax.Array:
        """Raw codes (N, n_styles, D) of images (N, S, S, 3)."""
        return self.psp.encoder(images)

    def codes(self, key, shot_codes, n_samples: int, opts: SampleOptions = SampleOptions()) -> jax.Array:
        """Edited raw codes (Q, n, L, D) from shot codes (Q, K, L, D) or (K, L, D)."""
        shot_codes = jnp.asarray(shot_codes, jnp.float32)
        if shot_codes.ndim == 3:
            shot_codes = shot_codes[None]
        check_options(opts, self.state, shot_codes.shape[1])
        return sample_codes(key, self.state, shot_codes, n_samples=int(n_samples), opts=opts, layers=self.layers)

    def decode(self, codes, chunk: int | None = None, noise: str = "stored") -> Iterator[np.ndarray]:
        """Images of raw codes (M, L, D), yielded in chunks of ``chunk`` (one compiled
        shape; the last chunk padded and trimmed). The next chunk is dispatched before
        the current one is handed over, so the device computes while the caller writes."""
        codes = jnp.asarray(codes)
        G = self.psp.decoder
        chunk = chunk or default_chunk(G)
        pending = None
        for start in range(0, codes.shape[0], chunk):
            part = codes[start:start + chunk]
            n = part.shape[0]
            if n < chunk:
                part = jnp.concatenate([part, jnp.repeat(part[-1:], chunk - n, axis=0)])
            out = G(self.psp.absolute_codes(part), input_is_latent=True, noise=noise)  # asynchronous
            if pending is not None:
                yield np.asarray(pending[0])[:pending[1]]
            pending = (out, n)
        if pending is not None:
            yield np.asarray(pending[0])[:pending[1]]

    def generate(self, key, shot_images, n_samples: int, opts: SampleOptions = SampleOptions(),
                 chunk: int | None = None) -> np.ndarray:
        """Images (Q, n, H, W, 3) from shot images (Q, K, S, S, 3) in [-1, 1]."""
        shot_images = np.asarray(shot_images, np.float32)
        q, k = shot_images.shape[:2]
        raw = self.encode(shot_images.reshape(q * k, *shot_images.shape[2:]))
        codes = self.codes(key, raw.reshape(q, k, *raw.shape[1:]), n_samples, opts)
        flat = codes.reshape(q * n_samples, *codes.shape[2:])
        imgs = np.concatenate(list(self.decode(flat, chunk)))
        return imgs.reshape(q, n_samples, *imgs.shape[1:])
