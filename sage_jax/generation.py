"""Few-shot generation with SAGE (and AGE, SAGE-Q, SAGE-I): from the codes of K shots of
each unseen class to many W+ codes and images.

Everything from the shots' codes to the edited W+ codes is one jitted computation,
vmapped over queries and samples (:func:`sample_codes`); the generator then runs in
fixed-size chunks (:meth:`SageGenerator.decode`), so memory stays bounded however
many images are asked for. Sample ``j`` of query ``q`` draws from
``fold_in(fold_in(key, q), j)``: the same key gives the same images, whatever the
chunking.

Work at scale (``sage-jax generate`` over many classes, several processes): every
item's randomness is a function of its own index (``sage-jax generate`` gives class
``c`` of the sorted class list the key ``fold_in(key, c)``, used as a single query),
so any process can make any class's images; :meth:`SageGenerator.decode_local` decodes
on every device of this process with a fixed number of images per device, so an image
comes out the same bit for bit whichever process and device made it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sage_jax import parallel
from sage_jax.inversion import InversionSetting, Inverter, check_setting
from sage_jax.models import default_chunk
from sage_jax.sage import editing as ed
from sage_jax.statistics import ClassStatistics, fingerprint


def model_defaults(generation_section) -> dict:
    """``t_B`` and ``t_A`` as a model directory's ``config.json`` asks for them (its
    ``generation`` section, e.g. the tiny model's 40 and 4), else the paper's 10 and 50."""
    section = generation_section or {}
    return {"t_B": int(section.get("t_B", SampleOptions.retrieval_t_B)),
            "t_A": int(section.get("t_A", SampleOptions.t_A))}


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


def default_options(mode: str, k: int, *, seen_classes: int, directions: int, a_length: int,
                    generation=None, alpha: float = 1.0, t_B=None, t_C: int | None = None,
                    t_A: int | None = None, note=None) -> SampleOptions:
    """The options of ``mode`` at ``k`` shots: the values given as they are, the others
    by default: ``t_B`` and ``t_A`` from the model's ``generation`` section
    (:func:`model_defaults`: the paper's 10 and 50 unless it says otherwise), ``t_C`` the
    paper's 30 at 1 shot and 20 at more, each capped at what the model allows: ``t_B``
    at the class embeddings' ``directions``, ``t_C`` at the ``seen_classes``, ``t_A`` at
    the dictionary's ``a_length``. ``note(name, default, limit)`` is told of every cap.
    ``t_B`` given (one value or several) is the mapping's; retrieval always uses the
    default. ``sage-jax generate`` and the demo both take their options from here."""
    d = model_defaults(generation)

    def capped(name, value, default, limit):
        if value is not None:
            return int(value)
        if default > limit and note is not None:
            note(name, default, limit)
        return min(default, limit)

    if t_B is None or (not isinstance(t_B, int) and not len(t_B)):
        mapping = (capped("t_B", None, d["t_B"], directions),)
    else:
        mapping = (int(t_B),) if isinstance(t_B, int) else tuple(int(t) for t in t_B)
    retrieval = capped("retrieval t_B", None, d["t_B"], directions)
    return SampleOptions(mode=mode, t_B=mapping, retrieval_t_B=retrieval,
                         t_C=capped("t_C", t_C, 30 if k == 1 else 20, seen_classes),
                         t_A=capped("t_A", t_A, d["t_A"], a_length), alpha=alpha)


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
                 opts: SampleOptions, layers: tuple[int, ...], first_sample=0, draws=None) -> jax.Array:
    """Edited raw W+ codes (Q, n_samples, L, D) for ``shots`` (Q, K, L, D), raw codes of
    K shots of each of Q unseen classes (Eq. 16-20): samples ``first_sample`` to
    ``first_sample + n_samples - 1`` (so a long run can be drawn block by block, with
    the same codes as in one call).

    Per query (vmapped): the mapped embeddings, the retrieved classes, their pooled
    Gaussian and the direction mask; then for all (query, sample) pairs at once: the
    normal draws (sample ``j`` of query ``q`` from ``fold_in(fold_in(key, q), j)``),
    ``n = mean + F z``, ``dw = A (mask * n)`` as one batched matrix product per edited
    layer, and the codes, written in a single pass.

    ``draws`` (Q, n_samples, E, l), when given, are the multivariate-normal codes ``n``
    to use instead of drawing them (a reference's recorded draws; ``key`` is then unused):
    everything else is the same computation."""
    mode = ed.get_mode(opts.mode)
    S = state.embeddings.shape[0]
    Q, K, L, D = shots.shape
    J = n_samples
    E, _, l = state.A.shape

    def per_query(w):  # w: (K, L, D)
        query = jnp.mean(w, axis=0)
        if mode.mapping:
            bases = jnp.stack([ed.map_embedding(w, state.basis, t) for t in opts.t_B])
            probe = ed.map_embedding(w, state.basis, opts.retrieval_t_B)
        else:
            bases, probe = query[None], query
        if mode.adaptive:
            idx = ed.similar_classes(probe, state.embeddings, opts.t_C)
            weights = jnp.zeros((S,), jnp.float32).at[idx].set(1.0)
        else:
            weights = jnp.ones((S,), jnp.float32)
        mean, mean_abs, cov = ed.pooled_statistics(state.moments, weights)
        mask = ed.direction_mask(mean_abs, opts.t_A) if mode.adaptive else jnp.ones_like(mean_abs)
        return bases, mean, mask, cov

    bases, mean, mask, cov = jax.vmap(per_query)(shots)            # (Q, B, L, D), (Q, E, l) x2, (Q, E, l, l)
    sample_ids = first_sample + jnp.arange(J)
    if draws is None:
        factor = ed.gaussian_factors(cov)                           # (Q, E, l, l)
        qkeys = jax.vmap(lambda q: jax.random.fold_in(key, q))(jnp.arange(Q))
        z = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(k, j), (E, l)))(
            sample_ids))(qkeys)                                     # (Q, J, E, l)
        n = ed.gaussian_draws(mean, factor, z)
    else:
        n = jnp.asarray(draws, mean.dtype).reshape(Q, J, E, l)
    n = n * mask[:, None]
    # one (QJ, l) @ (l, D) product per edited layer
    dw = jnp.einsum("eqk,edk->eqd", jnp.transpose(n, (2, 0, 1, 3)).reshape(E, Q * J, l), state.A)
    dw = (opts.alpha * dw).reshape(E, Q, J, D)
    # the base code of every sample: a mapped embedding (t_B[j % len(t_B)]), the shot's
    # own code (AGE: shot j % K) or the unmapped query (SAGE-I)
    if mode.mapping:
        base = bases[:, sample_ids % bases.shape[1]]                # (Q, J, L, D)
    elif mode.name == "age":
        base = shots[:, sample_ids % K]
    else:
        base = jnp.broadcast_to(bases, (Q, J, L, D))
    edited = {}
    for e, layer in enumerate(layers):
        edited.setdefault(layer, []).append(e)
    rows = [base[:, :, i] + sum(dw[e] for e in edited[i]) if i in edited else base[:, :, i] for i in range(L)]
    return jnp.stack(rows, axis=2)


@functools.partial(jax.jit, static_argnames=("module", "n_latent"))
def _decode_chunk(module, variables, raw, avg, *, n_latent: int):
    """Raw codes (N, >= n_latent, D) -> images, with the stored noise: the code offset
    and the synthesis in one compiled call (no per-chunk eager work)."""
    w = raw[:, :n_latent] + avg
    return module.apply(variables, [w], input_is_latent=True, noise=None, randomize_noise=False)


@functools.partial(jax.jit, static_argnames=("decoder", "n_samples", "opts", "layers", "chunk", "n_latent"))
def _images_from_codes(decoder, dec_vars, avg, state, key, shot_codes, *, n_samples: int, opts: SampleOptions,
                       layers: tuple[int, ...], chunk: int, n_latent: int):
    """Shot codes (Q, K, L, D) -> images (Q, n, H, W, 3) in one compiled call: sample
    the codes, decode them ``chunk`` at a time (``lax.map``, so the activations of one
    chunk are alive at once)."""
    Q = shot_codes.shape[0]
    codes = sample_codes(key, state, shot_codes, n_samples=n_samples, opts=opts, layers=layers)
    flat = codes.reshape(Q * n_samples, *codes.shape[2:])
    m = flat.shape[0]
    padded = -(-m // chunk) * chunk
    flat = jnp.concatenate([flat, jnp.repeat(flat[-1:], padded - m, axis=0)]) if padded > m else flat

    def one(part):
        w = part[:, :n_latent] + avg
        return decoder.apply(dec_vars, [w], input_is_latent=True, noise=None, randomize_noise=False)

    out = jax.lax.map(one, flat.reshape(padded // chunk, chunk, *flat.shape[1:]))
    out = out.reshape(padded, *out.shape[2:])[:m]
    return out.reshape(Q, n_samples, *out.shape[1:])


class SageGenerator:
    """SAGE generation from a pSp/AGE/SAGE model, a dictionary and class statistics.

    ``check=True`` refuses statistics made with another encoder or dictionary.

    ``inversion``: how the shots become codes, an :class:`InversionSetting` or an
    :class:`Inverter` (``lpips``: the LPIPSModel a setting with LPIPS needs). The
    default is the setting the statistics were made with; another one is refused
    (the shots' codes are compared with the statistics, so both must be made the same
    way)."""

    def __init__(self, psp, dictionary, stats: ClassStatistics, check: bool = True,
                 inversion: InversionSetting | Inverter | None = None, lpips=None):
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
        if inversion is None:
            inversion = stats.inversion
        if not isinstance(inversion, Inverter):
            if check:   # before the Inverter, which would ask for LPIPS weights first
                check_setting(stats.inversion, inversion)
            inversion = Inverter(psp, inversion, lpips)
        if check:
            check_setting(stats.inversion, inversion.setting)
        self.inverter = inversion
        self.psp, self.dictionary, self.stats = psp, dictionary, stats
        self.state = editing_state(stats, dictionary.A)
        self.layers = tuple(int(i) for i in dictionary.edited_layers)

    def encode(self, images) -> jax.Array:
        """Raw codes (N, n_styles, D) of images (N, S, S, 3), made as the statistics'
        codes were (the encoder's, or refined: ``self.inverter``)."""
        return self.inverter(images)

    def codes(self, key, shot_codes, n_samples: int, opts: SampleOptions = SampleOptions(),
              first_sample: int = 0) -> jax.Array:
        """Edited raw codes (Q, n, L, D) from shot codes (Q, K, L, D) or (K, L, D):
        samples ``first_sample`` .. ``first_sample + n - 1`` of each query."""
        shot_codes = jnp.asarray(shot_codes, jnp.float32)
        if shot_codes.ndim == 3:
            shot_codes = shot_codes[None]
        check_options(opts, self.state, shot_codes.shape[1])
        return sample_codes(key, self.state, shot_codes, n_samples=int(n_samples), opts=opts, layers=self.layers,
                            first_sample=jnp.asarray(first_sample, jnp.int32))

    def code_blocks(self, key, shot_codes, n_samples: int, opts: SampleOptions = SampleOptions(),
                    block: int = 1024) -> Iterator[jax.Array]:
        """The codes of :meth:`codes`, yielded ``block`` samples at a time (the last
        block shorter): the same codes, with memory bounded by the block."""
        for start in range(0, n_samples, block):
            yield self.codes(key, shot_codes, min(block, n_samples - start), opts, first_sample=start)

    def decode(self, codes, chunk: int | None = None, noise: str = "stored") -> Iterator[np.ndarray]:
        """Images of raw codes (M, L, D), yielded in chunks of ``chunk`` (one compiled
        shape; the last chunk padded and trimmed). One chunk is in flight at a time, so
        memory holds one chunk's activations however many images there are."""
        codes = jnp.asarray(codes, jnp.float32)
        G = self.psp.decoder
        chunk = chunk or default_chunk(G)
        if codes.ndim != 3 or codes.shape[1] < G.n_latent:
            raise ValueError(f"raw codes must be (M, >={G.n_latent}, D), got {codes.shape}")
        avg = self.psp.absolute_codes(jnp.zeros((1, G.n_latent, G.style_dim)))  # what is added to raw codes
        for start in range(0, codes.shape[0], chunk):
            part = codes[start:start + chunk]
            n = part.shape[0]
            if n < chunk:
                part = jnp.concatenate([part, jnp.repeat(part[-1:], chunk - n, axis=0)])
            if noise == "stored":
                out = _decode_chunk(G.module, G.variables, part, avg, n_latent=G.n_latent)
            else:
                out = G(self.psp.absolute_codes(part), input_is_latent=True, noise=noise)
            yield np.asarray(out)[:n]

    def decode_local(self, blocks, chunk: int | None = None) -> Iterator[tuple[object, np.ndarray]]:
        """Images of a stream of raw codes, decoded on every device of this process at
        once (:func:`sage_jax.parallel.local_mesh`), with the stored noise.

        ``blocks``: ``(tag, codes (m, >= n_latent, D))`` pairs (e.g. a class name and
        some of its codes); yields ``(tag, images (m', H, W, 3))`` pieces in the order of
        the rows, the rows of one block in one or several pieces. Each call decodes
        ``K x chunk`` rows, ``chunk`` on each of the ``K`` local devices, consecutive
        blocks sharing a call (only the very last call is padded, by repeating its last
        row). Every device always decodes ``chunk`` rows, whatever ``K``, and a row's
        image does not depend on the rows beside it: an image is the same bit for bit
        on one device or spread over several processes. Memory holds one call's codes
        and images."""
        G = self.psp.decoder
        chunk = int(chunk or default_chunk(G))
        mesh = parallel.local_mesh()
        step = chunk * mesh.devices.size
        avg = self.psp.absolute_codes(jnp.zeros((1, G.n_latent, G.style_dim)))
        rows: list[np.ndarray] = []
        tags: list[tuple[object, int]] = []   # (tag, rows) runs of ``rows``
        held = 0

        def call(final: bool):
            nonlocal rows, tags, held
            while held >= step or (final and held):
                flat = np.concatenate(rows) if len(rows) > 1 else rows[0]
                part, rest = flat[:step], flat[step:]
                n = len(part)
                if n < step:
                    part = np.concatenate([part, np.repeat(part[-1:], step - n, axis=0)])
                out = np.asarray(_decode_chunk(G.module, G.variables, parallel.put_local(part, mesh), avg,
                                               n_latent=G.n_latent))[:n]
                rows, held = ([rest] if len(rest) else []), len(rest)
                start = 0
                while start < n:
                    tag, m = tags[0]
                    take = min(m, n - start)
                    yield tag, out[start:start + take]
                    start += take
                    tags[0] = (tag, m - take)
                    if tags[0][1] == 0:
                        tags.pop(0)

        for tag, codes in blocks:
            codes = np.asarray(codes, np.float32)
            if codes.ndim != 3 or codes.shape[1] < G.n_latent:
                raise ValueError(f"raw codes must be (M, >={G.n_latent}, D), got {codes.shape}")
            if not len(codes):
                continue
            rows.append(codes)
            tags.append((tag, len(codes)))
            held += len(codes)
            yield from call(False)
        yield from call(True)

    def images_from_codes(self, key, shot_codes, n_samples: int, opts: SampleOptions = SampleOptions(),
                          chunk: int | None = None) -> np.ndarray:
        """Images (Q, n, H, W, 3) from shot codes (Q, K, L, D) or (K, L, D): sampling
        and chunked decoding in one compiled call (all images are returned: for very
        many, :meth:`code_blocks` and :meth:`decode` stream)."""
        shot_codes = jnp.asarray(shot_codes, jnp.float32)
        if shot_codes.ndim == 3:
            shot_codes = shot_codes[None]
        check_options(opts, self.state, shot_codes.shape[1])
        G = self.psp.decoder
        chunk = int(chunk or default_chunk(G))
        avg = self.psp.absolute_codes(jnp.zeros((1, G.n_latent, G.style_dim)))
        return np.asarray(_images_from_codes(G.module, G.variables, avg, self.state, key, shot_codes,
                                             n_samples=int(n_samples), opts=opts, layers=self.layers,
                                             chunk=min(chunk, shot_codes.shape[0] * int(n_samples)),
                                             n_latent=G.n_latent))

    def generate(self, key, shot_images, n_samples: int, opts: SampleOptions = SampleOptions(),
                 chunk: int | None = None) -> np.ndarray:
        """Images (Q, n, H, W, 3) from shot images (Q, K, S, S, 3) in [-1, 1]: the shots
        encoded, then :meth:`images_from_codes`."""
        shot_images = jnp.asarray(shot_images, jnp.float32)
        s = self.psp.encoder.input_size
        if shot_images.ndim != 5 or shot_images.shape[2:] != (s, s, 3):
            raise ValueError(f"shot images must be (Q, K, {s}, {s}, 3) in [-1, 1], got {shot_images.shape}")
        q, k = shot_images.shape[:2]
        raw = self.encode(shot_images.reshape(q * k, s, s, 3))
        return self.images_from_codes(key, raw.reshape(q, k, *raw.shape[1:]), n_samples, opts, chunk)
