"""Dictionary learning (SAGE paper Sec. 3.2.1, Eq. 9-14) with the generator and encoder
frozen: only the group encoders and ``A`` train.

For a batch of seen-class images x with labels c: w = E(x) (raw codes), e_c the class
embedding, dw = w - e_c; the dictionary gives A n on the edited layers; the generator
decodes w with the edited layers replaced by e_c + A n (the other layers keep the
image's own code, as the official ``AGE.forward`` does), plus ``latent_avg``. Loss:
MSE reconstruction + lambda_orth * L_orth + lambda_sparse * L_sparse. Adam.

The step is jitted over a data-parallel mesh (batch sharded, parameters replicated);
batches are drawn from ``fold_in(key, step)``, so a resumed run continues exactly.
Orbax checkpoints every ``ckpt_every`` steps (and at the end), ``metrics.jsonl`` with one
JSON object per logged step, a tqdm progress bar.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from sage_jax import parallel
from sage_jax.models import DictionaryModel, encode_images, init_dictionary
from sage_jax.sage import losses
from sage_jax.train.common import run_loop


def default_config() -> ml_collections.ConfigDict:
    """The ``dictionary`` section's defaults, the one place of each (``configs/*.py``
    start from it through :func:`sage_jax.config.default_config`; ``sage-jax
    train-dictionary`` without ``--config`` trains with it): the paper's and the
    official code's options (SAGE Sec. 4.1; AGE's training options)."""
    c = ml_collections.ConfigDict()
    c.groups = ((0, 1, 2), (3, 4, 5))  # the official code's two groups; the paper: (0-2, 3-6, 7-17)
    c.a_length = 100                   # A_length of the official checkpoints
    c.steps = 15000                    # official max_steps
    c.batch_size = 8
    c.lr = 1e-4                        # Adam, official learning rate
    c.lambda_orth = 5e-4               # official orthogonal_lambda
    c.lambda_sparse = 5e-3             # official sparse_lambda
    c.orth_form = "l1"                 # the code's L1 form; "frobenius" is the paper's Eq. 13
    c.sparse_norm = 32.0               # the official sparse loss divides by 32
    c.seed = 0
    c.log_every = 10
    c.ckpt_every = 500
    c.keep = 3
    c.init = "random"                  # A ~ N(0, 1) as the originals; "pca": see pca_init
    return c


INITS = ("random", "pca")


def pca_init(codes, labels, embeddings, layers, a_length: int) -> np.ndarray:
    """A (E, D, l) whose columns, per edited layer, are the top ``a_length`` principal
    directions of the codes' within-class deviations ``w - e_c`` (what the dictionary is
    to span: the category-irrelevant variation), scaled to the random init's expected
    column norm sqrt(D). ``codes`` (N, L, D), ``labels`` (N,) (negative: ignored)."""
    codes, labels = np.asarray(codes, np.float64), np.asarray(labels)
    keep = labels >= 0
    dev = codes[keep] - np.asarray(embeddings, np.float64)[labels[keep]]
    D = dev.shape[-1]
    if dev.shape[0] < 2:
        raise ValueError("a PCA-initialised dictionary needs the codes of at least 2 images")
    if a_length > min(dev.shape[0], D):
        raise ValueError(f"a_length {a_length} exceeds the {min(dev.shape[0], D)} principal directions "
                         f"{dev.shape[0]} codes of width {D} have")
    A = []
    for layer in layers:
        _, _, vt = np.linalg.svd(dev[:, layer], full_matrices=False)
        A.append(vt[:a_length].T * np.sqrt(D))
    return np.stack(A).astype(np.float32)


def _loss_fn(params, frozen, x, y, w=None, *, dict_module, enc_module, gen_module, layers, n_latent, iterations,
             cfg):
    """``w``: the images' raw codes when made outside (refined codes); None: the encoder's."""
    emb, latent_avg = frozen["emb"], frozen["latent_avg"]
    if w is None:
        w = encode_images(enc_module, frozen["enc"], gen_module, frozen["gen"], latent_avg, x, iterations)
    w = jax.lax.stop_gradient(w)  # (B, L, D)
    valid = (y >= 0).astype(jnp.float32)
    e = emb[jnp.clip(y, 0)]
    dw = w - e
    dw_hat, codes = dict_module.apply({"params": params}, dw)
    full = w.at[:, layers].set(e[:, layers] + dw_hat)
    absolute = full[:, :n_latent] + latent_avg
    recon = gen_module.apply(frozen["gen"], [absolute], input_is_latent=True, randomize_noise=False)
    target = x if x.shape[1:3] == recon.shape[1:3] else jax.image.resize(x, recon.shape, "bilinear")
    per_image = jnp.mean(jnp.square(recon - target), axis=(1, 2, 3))
    rec = jnp.sum(per_image * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    orth = losses.orthogonal_loss(params["A"], emb, layers, cfg["orth_form"])
    sparse = losses.sparse_loss([c * valid[:, None] for c in codes], norm=cfg["sparse_norm"])
    total = rec + cfg["lambda_orth"] * orth + cfg["lambda_sparse"] * sparse
    return total, {"loss": total, "rec": rec, "orth": orth, "sparse": sparse}


@functools.lru_cache(maxsize=8)
def _make_step(dict_module, enc_module, gen_module, layers, n_latent, iterations, loss_cfg, lr):
    """The jitted update, built once per models and options (also across resumes)."""
    loss = functools.partial(_loss_fn, dict_module=dict_module, enc_module=enc_module, gen_module=gen_module,
                             layers=layers, n_latent=n_latent, iterations=iterations, cfg=dict(loss_cfg))
    tx = optax.adam(lr)

    @jax.jit
    def update(params, opt_state, frozen, x, y, w=None):
        grads, metrics = jax.grad(loss, has_aux=True)(params, frozen, x, y, w)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return update


def train_dictionary(psp, stats, dataset, cfg: ml_collections.ConfigDict, workdir: str,
                     quiet: bool = False, mesh=None, codes=None) -> DictionaryModel:
    """Train (or resume training) a dictionary in ``workdir``; returns the final model,
    also saved to ``workdir/dictionary``.

    ``codes``: images -> raw codes, the way the class statistics' codes were made (a
    :class:`~sage_jax.inversion.CachedInverter` of refined codes); None: the encoder's,
    computed inside the compiled step. ``cfg.init`` "pca" starts ``A`` from
    :func:`pca_init` of the codes of ``dataset`` (one pass, holding every image's code in
    host memory: N x L x D floats) instead of N(0, 1)."""
    from sage_jax.checkpoints import save_model

    if psp.encoder is None:
        raise ValueError("dictionary training needs the encoder")
    if dataset.class_names != stats.class_names:
        raise ValueError("the dataset's classes are not those of the class statistics")
    mesh = mesh or parallel.make_mesh()
    workdir = os.path.abspath(workdir)
    plain = {k: cfg[k] for k in ("orth_form", "sparse_norm", "lambda_orth", "lambda_sparse")}
    dict_cfg = {"groups": [list(g) for g in cfg.groups], "style_dim": psp.encoder.style_dim,
                "a_length": int(cfg.a_length)}
    key = jax.random.PRNGKey(cfg.seed)
    model = init_dictionary(dict_cfg, jax.random.fold_in(key, 0))
    if max(model.edited_layers) >= psp.encoder.n_styles:
        raise ValueError(f"groups {cfg.groups} reach past the encoder's {psp.encoder.n_styles} styles")
    init = str(cfg.init)
    if init not in INITS:
        raise ValueError(f"dictionary.init must be one of {INITS}, got {init!r}")
    params = model.variables["params"]
    if init == "pca" and not os.path.isdir(os.path.join(workdir, "checkpoints")):   # a resumed run has its A
        encode = codes if codes is not None else psp.encode
        ws, ys = [], []
        for imgs, labels in tqdm(dataset.batches(64), total=-(-len(dataset) // 64), desc="dictionary init (PCA)",
                                 unit="batch", disable=quiet):
            ws.append(np.asarray(encode(imgs)))
            ys.append(np.asarray(labels))
        A = pca_init(np.concatenate(ws), np.concatenate(ys), stats.embeddings, model.edited_layers,
                     int(cfg.a_length))
        params = {**params, "A": jnp.asarray(A)}
    state = {"params": params, "opt_state": optax.adam(cfg.lr).init(params), "step": jnp.zeros((), jnp.int32)}

    rep = parallel.replicated(mesh)
    emb = jax.device_put(jnp.asarray(stats.embeddings, jnp.float32), rep)
    avg = psp.code_offset()
    frozen = {"enc": jax.device_put(psp.encoder.variables, rep), "gen": jax.device_put(psp.decoder.variables, rep),
              "emb": emb, "latent_avg": jax.device_put(avg, rep)}
    update = _make_step(model.module, psp.encoder.module, psp.decoder.module,
                        tuple(int(i) for i in model.edited_layers), psp.n_latent, psp.restyle_iterations,
                        tuple(sorted(plain.items())), float(cfg.lr))

    def step_fn(state, x, y, step):
        # refined codes of this process's rows (the cache is per image)
        w = None if codes is None else parallel.shard_batch(
            np.asarray(codes(parallel.local_rows(x)), np.float32), mesh)
        params, opt_state, metrics = update(state["params"], state["opt_state"], frozen, x, y, w)
        return {"params": params, "opt_state": opt_state, "step": jnp.asarray(step + 1, jnp.int32)}, metrics

    state, _ = run_loop(workdir=workdir, state=state, step_fn=step_fn, dataset=dataset, batch_size=cfg.batch_size,
                        data_key=jax.random.fold_in(key, 1), mesh=mesh, steps=cfg.steps, log_every=cfg.log_every,
                        ckpt_every=cfg.ckpt_every, keep=cfg.keep, desc="dictionary", quiet=quiet,
                        postfix=lambda m: {"loss": f"{m['loss']:.4f}"})
    params = state["params"]
    final = DictionaryModel(dict_cfg, {"params": parallel.to_host(params)})
    save_model(os.path.join(workdir, "dictionary"), final, overwrite=True,
               extra={"steps": int(cfg.steps), "seed": int(cfg.seed)})
    return final

