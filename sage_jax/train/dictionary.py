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

import concurrent.futures
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from sage_jax import parallel
from sage_jax.models import DictionaryModel, init_dictionary
from sage_jax.sage import losses


def default_config() -> ml_collections.ConfigDict:
    """Paper / official defaults (SAGE Sec. 4.1; AGE's training options)."""
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
    return c


def _loss_fn(params, frozen, x, y, *, dict_module, enc_module, gen_module, layers, n_latent, cfg):
    emb, latent_avg = frozen["emb"], frozen["latent_avg"]
    w = jax.lax.stop_gradient(enc_module.apply(frozen["enc"], x))  # (B, L, D)
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


def _abstract(tree):
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), tree)


def train_dictionary(psp, stats, dataset, cfg: ml_collections.ConfigDict, workdir: str,
                     quiet: bool = False, mesh=None) -> DictionaryModel:
    """Train (or resume training) a dictionary in ``workdir``; returns the final model,
    also saved to ``workdir/dictionary``."""
    import orbax.checkpoint as ocp

    from sage_jax.checkpoints import save_model

    if psp.encoder is None:
        raise ValueError("dictionary training needs the encoder")
    if dataset.class_names != stats.class_names:
        raise ValueError("the dataset's classes are not those of the class statistics")
    mesh = mesh or parallel.make_mesh()
    parallel.check_batch_size(cfg.batch_size, mesh)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    plain = {k: cfg[k] for k in ("orth_form", "sparse_norm", "lambda_orth", "lambda_sparse")}
    dict_cfg = {"groups": [list(g) for g in cfg.groups], "style_dim": psp.encoder.style_dim,
                "a_length": int(cfg.a_length)}
    key = jax.random.PRNGKey(cfg.seed)
    model = init_dictionary(dict_cfg, jax.random.fold_in(key, 0))
    if max(model.edited_layers) >= psp.encoder.n_styles:
        raise ValueError(f"groups {cfg.groups} reach past the encoder's {psp.encoder.n_styles} styles")
    tx = optax.adam(cfg.lr)
    params = model.variables["params"]
    state = {"params": params, "opt_state": tx.init(params), "step": np.int64(0)}

    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=cfg.keep, create=True))
    start = 0
    if manager.latest_step() is not None:
        start = int(manager.latest_step())
        state = manager.restore(start, args=ocp.args.StandardRestore(_abstract(state)))
        if not quiet:
            print(f"resuming from step {start}")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    _truncate_metrics(metrics_path, start)

    rep = parallel.replicated(mesh)
    emb = jax.device_put(jnp.asarray(stats.embeddings, jnp.float32), rep)
    if psp.config.get("start_from_latent_avg", True):
        avg = jnp.asarray(psp.latent_avg)
        avg = avg[: psp.n_latent] if avg.shape[0] > 1 else avg
    else:
        avg = jnp.zeros((1, psp.decoder.style_dim))
    frozen = {"enc": jax.device_put(psp.encoder.variables, rep), "gen": jax.device_put(psp.decoder.variables, rep),
              "emb": emb, "latent_avg": jax.device_put(avg, rep)}
    loss = functools.partial(
        _loss_fn, dict_module=model.module, enc_module=psp.encoder.module, gen_module=psp.decoder.module,
        layers=tuple(int(i) for i in model.edited_layers), n_latent=psp.n_latent, cfg=plain)

    @jax.jit
    def step_fn(params, opt_state, frozen, x, y):
        grads, metrics = jax.grad(loss, has_aux=True)(params, frozen, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    params = parallel.replicate(state["params"], mesh)
    opt_state = parallel.replicate(state["opt_state"], mesh)
    data_key = jax.random.fold_in(key, 1)
    n = len(dataset)
    replace = cfg.batch_size > n

    def indices(step):
        k = jax.random.fold_in(data_key, step)
        return np.asarray(jax.random.choice(k, n, (cfg.batch_size,), replace=replace))

    with concurrent.futures.ThreadPoolExecutor(2) as pool, open(metrics_path, "a") as log:
        pending = pool.submit(dataset.load_batch, indices(start)) if start < cfg.steps else None
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="dictionary",
                   unit="step", disable=quiet)
        for step in bar:
            x, y = pending.result()
            if step + 1 < cfg.steps:
                pending = pool.submit(dataset.load_batch, indices(step + 1))
            batch = parallel.shard_batch((x, y), mesh)
            params, opt_state, metrics = step_fn(params, opt_state, frozen, *batch)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                m = {k: float(v) for k, v in metrics.items()}
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(f"loss became {m['loss']} at step {done}; the last good "
                                             f"checkpoint is kept in {workdir}/checkpoints")
                log.write(json.dumps({"step": done, **m}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{m['loss']:.4f}")
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                manager.save(done, args=ocp.args.StandardSave(
                    {"params": params, "opt_state": opt_state, "step": np.int64(done)}))
        manager.wait_until_finished()
    final = DictionaryModel(dict_cfg, {"params": jax.tree_util.tree_map(np.asarray, params)})
    save_model(os.path.join(workdir, "dictionary"), final, overwrite=True,
               extra={"steps": int(cfg.steps), "seed": int(cfg.seed)})
    return final


def _truncate_metrics(path: str, step: int) -> None:
    """Drop logged steps beyond the checkpoint a run resumes from."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with open(path, "w") as f:
        f.writelines(lines)
