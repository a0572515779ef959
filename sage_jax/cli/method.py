"""SAGE's method on trained models: ``sample`` (images from seeds or latents),
``invert`` (W+ codes of images), ``embed`` (class statistics of the seen classes),
``train-dictionary`` (the attribute dictionary, generator and encoder frozen) and
``generate`` (few-shot generation for unseen classes); the refinement flags they share."""

from __future__ import annotations

import json
import os

import numpy as np

from sage_jax.errors import UsageError


def parse_seeds(spec: str) -> list[int]:
    """``"0-3,7,10-11"`` -> [0, 1, 2, 3, 7, 10, 11]."""
    seeds: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise UsageError(f"seed range {part!r} runs backwards")
                seeds.extend(range(lo_i, hi_i + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UsageError(f"cannot read seeds {spec!r}: use e.g. 0-15 or 1,5,9") from None
    if not seeds:
        raise UsageError("no seeds given")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise UsageError("seeds must lie in [0, 2**32)")
    return seeds


# ----------------------------------------------------------------------------- model directories
MODEL_DIR_HINT = "a model directory from 'sage-jax train' (psp/, dictionary/, class_stats.npz, config.json)"


def _model_dir(path) -> str | None:
    """``path`` when it is a model directory written by ``sage-jax train`` (or the
    shipped one): it holds ``psp/psp.json``; else None."""
    return path if path and os.path.isfile(os.path.join(path, "psp", "psp.json")) else None


def _psp_path(path) -> str:
    """A pSp/AGE/SAGE source for ``load_psp``: a ``.pt`` file, a pSp directory
    (``psp.json``), or the ``psp/`` of a model directory."""
    if not os.path.exists(path):
        raise UsageError(f"checkpoint {path} does not exist")
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "psp.json")):
        return path
    if _model_dir(path):
        return os.path.join(path, "psp")
    raise UsageError(f"{path} is neither a pSp directory (with psp.json, as 'sage-jax train-encoder' writes "
                     f"WORKDIR/psp) nor {MODEL_DIR_HINT}")


# ----------------------------------------------------------------------------- refinement
def _check_refine_args(args) -> None:
    """--refine-steps / --refine-lr / --lpips* refused before any work when impossible."""
    import math

    if args.refine_steps is not None and args.refine_steps < 0:
        raise UsageError(f"--refine-steps must be 0 (the encoder's codes) or more, got {args.refine_steps}")
    if args.refine_lr is not None and not (math.isfinite(args.refine_lr) and args.refine_lr > 0):
        raise UsageError(f"--refine-lr must be a positive number, got {args.refine_lr}")
    if (args.lpips_vgg is None) != (args.lpips_heads is None):
        raise UsageError("give --lpips, or both --lpips-vgg and --lpips-heads")
    if args.lpips and args.lpips_vgg:
        raise UsageError("give --lpips or --lpips-vgg with --lpips-heads, not both")
    if (args.lpips or args.lpips_vgg) and args.refine_steps == 0:
        raise UsageError("--lpips weights are for the refinement: give --refine-steps N (N > 0)")
    for f in (args.lpips, args.lpips_vgg, args.lpips_heads):
        if f and not os.path.exists(f):
            raise UsageError(f"LPIPS weights {f} do not exist")


def _inverter(args, psp, default=None):
    """The Inverter of --refine-steps / --refine-lr / --lpips*: what the flags give,
    the rest from ``default`` (the statistics' setting, else the encoder's codes)."""
    from sage_jax.inversion import InversionSetting, Inverter

    base = default or InversionSetting()
    lpips_given = bool(args.lpips or args.lpips_vgg)
    steps = base.refine_steps if args.refine_steps is None else args.refine_steps
    lr = base.refine_lr if args.refine_lr is None else args.refine_lr
    use_lpips = lpips_given or (args.refine_steps is None and base.lpips)
    if lpips_given and steps == 0:
        raise UsageError("--lpips weights are for the refinement: give --refine-steps N (N > 0)")
    setting = InversionSetting(steps, lr, use_lpips)
    lpips = None
    if lpips_given:
        from sage_jax.checkpoints.lpips import load_lpips, load_lpips_from_parts

        lpips = load_lpips(args.lpips) if args.lpips else load_lpips_from_parts(args.lpips_vgg, args.lpips_heads)
    if default is not None and setting != default:
        from sage_jax.inversion import check_setting

        try:
            check_setting(default, setting, what=f"the class statistics {args.stats}")
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        return Inverter(psp, setting, lpips)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _add_refine_args(s, default: str) -> None:
    g = s.add_argument_group("refinement by optimisation (none of pSp, AGE, SAGE offers it)")
    g.add_argument("--refine-steps", dest="refine_steps", type=int, default=None,
                   help="Adam steps optimising each image's W+ code from the encoder's on reconstruction loss "
                        f"(MSE, + LPIPS with --lpips); 0: the encoder's codes ({default})")
    g.add_argument("--refine-lr", dest="refine_lr", type=float, default=None,
                   help="the refinement's Adam learning rate (default 0.02)")
    g.add_argument("--lpips", default=None, help="LPIPS(net='vgg') weights for the refinement loss")
    g.add_argument("--lpips-vgg", dest="lpips_vgg", default=None, help="or torchvision vgg16-397923af.pth ...")
    g.add_argument("--lpips-heads", dest="lpips_heads", default=None, help="... with lpips/weights/v0.1/vgg.pth")


# ----------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from sage_jax import checkpoints
    from sage_jax.images import make_grid, save_png, to_uint8

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0.0 <= args.truncation <= 1.0:
        raise UsageError("--truncation must lie in [0, 1]")
    src = args.checkpoint
    if not os.path.exists(src):
        raise UsageError(f"checkpoint {src} does not exist")
    if os.path.isdir(src):
        if _model_dir(src):                                   # sage-jax train's model directory
            src = os.path.join(src, "psp")
        if os.path.isfile(os.path.join(src, "psp.json")):     # a pSp directory: its decoder
            src = checkpoints.psp_part(src, "decoder")
        if not os.path.isfile(os.path.join(src, "model.json")):
            raise UsageError(f"{args.checkpoint} is neither a generator directory (model.json, from "
                             f"'sage-jax convert' or train-gan), a pSp directory (psp.json) nor {MODEL_DIR_HINT}")
        G = checkpoints.load_generator(src, dtype=args.dtype)
    else:
        ckpt = checkpoints.read_torch(src)
        if args.which and isinstance(ckpt, dict) and args.which in ckpt:
            ckpt = ckpt[args.which]
        G = checkpoints.load_generator(ckpt, dtype=args.dtype)

    if args.latents:
        try:
            codes = np.load(args.latents)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read --latents {args.latents}: {e}") from None
        codes = np.asarray(codes, np.float32)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.shape[-1] != G.style_dim or codes.ndim not in (2, 3):
            raise UsageError(f"--latents must be (N, {G.style_dim}) or (N, L, {G.style_dim}); got {codes.shape}")
        if codes.ndim == 3 and not args.input_is_latent:
            raise UsageError("W+ latents (N, L, D) need --input-is-latent")
        if codes.ndim == 3 and codes.shape[1] < G.n_latent:
            raise UsageError(f"W+ latents need at least {G.n_latent} entries per image, got {codes.shape[1]}")
        seeds = list(range(args.seed, args.seed + len(codes)))  # noise keys only
        input_is_latent = args.input_is_latent
    else:
        if args.input_is_latent:
            raise UsageError("--input-is-latent needs --latents")
        seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.seed, args.seed + args.n))
        codes = None
        input_is_latent = False
    n = len(seeds)
    if n == 0:
        raise UsageError("nothing to generate")
    label_rows, center_labels = _sample_labels(args, G, n, input_is_latent)

    t_lat = None
    if args.truncation < 1.0:
        t_lat = G.mean_latent(args.truncation_samples, jax.random.PRNGKey(args.seed), labels=center_labels)

    @jax.jit
    def z_from_seeds(seed_arr):
        return jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), (G.style_dim,)))(seed_arr)

    @jax.jit
    def noise_from_seeds(seed_arr):
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 1))(seed_arr)
        per = jax.vmap(lambda k: G.random_noise(k, 1))(keys)
        return [m[:, 0] for m in per]

    os.makedirs(args.out, exist_ok=True)
    bs = min(args.batch_size, n)
    outputs = np.zeros((n, G.size, G.size, 3), np.float32) if args.save_array else None
    u8_all = []
    for start in tqdm(range(0, n, bs), desc="sampling", unit="batch", disable=args.quiet):
        idx = np.arange(start, min(start + bs, n))
        pad_idx = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])  # one compiled shape
        seed_arr = jnp.asarray(np.asarray(seeds, np.uint32)[pad_idx])
        styles = jnp.asarray(codes[pad_idx]) if codes is not None else z_from_seeds(seed_arr)
        noise = noise_from_seeds(seed_arr) if args.noise == "random" else "stored"
        imgs = G(styles, input_is_latent=input_is_latent, noise=noise,
                 truncation=args.truncation, truncation_latent=t_lat,
                 labels=None if label_rows is None else label_rows[pad_idx])
        imgs = np.asarray(imgs)[: len(idx)]
        if outputs is not None:
            outputs[idx] = imgs
        u8 = to_uint8(imgs)
        for j, i in enumerate(idx):
            name = f"seed{seeds[i]:06d}.png" if codes is None else f"latent{i:06d}.png"
            save_png(os.path.join(args.out, name), u8[j])
        u8_all.append(u8)
    grid = make_grid(np.concatenate(u8_all), args.grid_cols)
    save_png(os.path.join(args.out, "grid.png"), grid)
    if outputs is not None:
        np.save(args.save_array, outputs)
    print(f"wrote {n} images and grid.png to {args.out}" +
          (f"; raw float32 array to {args.save_array}" if args.save_array else ""))
    return 0


def _sample_labels(args, G, n, input_is_latent):
    """Label vectors (n, c_dim) for a class-conditional generator fed z (else None), and
    the labels its truncation centre averages over (the class of --class-label, else
    every class in turn)."""
    from sage_jax.models import label_vectors

    given = args.class_label is not None or args.labels
    if not given:
        if G.c_dim and not input_is_latent:
            raise UsageError(f"this generator is class-conditional ({G.c_dim} classes): pass --class-label K "
                             f"or --labels FILE.npy")
        return None, None
    if not G.c_dim:
        raise UsageError("--class-label / --labels need a class-conditional generator; this one is unconditional")
    if input_is_latent:
        raise UsageError("W / W+ codes already carry their class: --class-label / --labels apply to z")
    if args.class_label is not None and args.labels:
        raise UsageError("give --class-label or --labels, not both")
    if args.class_label is not None:
        if not 0 <= args.class_label < G.c_dim:
            raise UsageError(f"--class-label must lie in [0, {G.c_dim}), got {args.class_label}")
        return np.eye(G.c_dim, dtype=np.float32)[np.full(n, args.class_label)], \
            np.full(args.truncation_samples, args.class_label)
    try:
        rows = np.asarray(label_vectors(np.load(args.labels), G.c_dim, n, what=f"--labels {args.labels}"))
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    return rows, None


# ----------------------------------------------------------------------------- invert
def cmd_invert(args) -> int:
    """Codes of every image of ``--images``, in the sorted order of their paths.

    Several processes: process ``p`` inverts its contiguous share of the sorted files
    (:func:`sage_jax.parallel.process_share`), ``--batch-size`` images on each of its
    devices per call, and writes the reconstructions of its own images
    (``recon/NNNNNN_<stem>.png``, ``NNNNNN`` the image's row in codes.npy, renamed into
    place once the earlier processes' counts are known). Process 0 writes the summary:
    codes.npy, offsets.npy, files.txt (in the sorted order), skipped.txt,
    inversion.json and recon_grid.png. An image's code does not depend on how the work
    was split (every device inverts ``--batch-size`` rows), and ``--noise random``
    draws image ``i``'s noise (``i`` its place among the sorted files) from
    ``fold_in(PRNGKey(seed), i)``."""
    import jax
    from tqdm import tqdm

    from sage_jax import checkpoints, parallel
    from sage_jax.images import ImageReport, list_images, make_grid, save_png, to_uint8, try_load_image

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    _check_refine_args(args)
    psp = checkpoints.load_psp(_psp_path(args.checkpoint))
    if psp.encoder is None:
        raise UsageError(f"{args.checkpoint} has no encoder")
    inverter = _inverter(args, psp)
    files = list_images(args.images)
    if not files:
        raise UsageError(f"no image files found in {' '.join(args.images)}")
    E, G = psp.encoder, psp.decoder
    os.makedirs(args.out, exist_ok=True)
    recon_dir = os.path.join(args.out, "recon")
    p = jax.process_index()
    # process 0's rows start at 0; another's reconstructions wait under a private name
    # until the rows before its own are counted
    stage_dir = recon_dir if p == 0 else os.path.join(recon_dir, f".process{p}")
    if not args.no_recon:
        os.makedirs(stage_dir, exist_ok=True)

    mine = parallel.process_share(len(files))
    mesh = parallel.local_mesh()
    step = args.batch_size * mesh.devices.size    # --batch-size images on each local device
    key = jax.random.PRNGKey(args.seed)

    @jax.jit
    def noise_of(indices):   # per image: its own noise maps, from its index
        per = jax.vmap(lambda i: G.random_noise(jax.random.fold_in(key, i), 1))(indices)
        return [m[:, 0] for m in per]

    report = ImageReport()
    kept, raws, codes, previews, staged = [], [], [], [], []
    parallel.barrier("invert: start")   # the first collective connects the processes: all at once
    with tqdm(total=len(mine), desc="inverting", unit="img", disable=args.quiet or not parallel.is_main()) as bar:
        for start in range(mine.start, mine.stop, step):
            batch, idx = [], []
            for i in range(start, min(start + step, mine.stop)):
                img = try_load_image(files[i], E.input_size, report)
                if img is not None:
                    batch.append(img)
                    idx.append(i)
            bar.update(min(start + step, mine.stop) - start)
            if not batch:
                continue
            n = len(batch)
            x = np.stack(batch + [batch[-1]] * (step - n))  # one compiled shape
            raw = inverter(parallel.put_local(x, mesh))
            absolute = psp.absolute_codes(raw)
            raws.append(np.asarray(raw)[:n])
            codes.append(np.asarray(absolute)[:n])
            if not args.no_recon:
                noise = args.noise
                if noise == "random":
                    noise = [parallel.put_local(np.asarray(m), mesh)
                             for m in noise_of(np.asarray(idx + [idx[-1]] * (step - n), np.int32))]
                rec = to_uint8(np.asarray(G(absolute, input_is_latent=True, noise=noise))[:n])
                for i, img, r in zip(idx, x[:n], rec):
                    inp = to_uint8(img)
                    if inp.shape[0] != G.size:
                        from PIL import Image

                        inp = np.asarray(Image.fromarray(inp).resize((G.size, G.size), Image.BILINEAR))
                    pair = np.concatenate([inp, r], axis=1)
                    stem = os.path.splitext(os.path.basename(files[i]))[0]
                    save_png(os.path.join(stage_dir, f"{len(staged):06d}_{stem}.png"), pair)
                    staged.append(stem)
                    if len(previews) < 32:
                        previews.append(pair)
            kept += idx
    # every process's rows, previews, skips and conversions, in file order
    everyone = parallel.allgather_objects((kept, report.state(), previews))
    before = sum(len(k) for k, _, _ in everyone[:p])
    if stage_dir != recon_dir and not args.no_recon:
        for j, stem in enumerate(staged):
            os.replace(os.path.join(stage_dir, f"{j:06d}_{stem}.png"),
                       os.path.join(recon_dir, f"{before + j:06d}_{stem}.png"))
        os.rmdir(stage_dir)
    shape = (G.n_latent, G.style_dim)
    all_codes = parallel.gather_rows(np.concatenate(codes) if codes else np.zeros((0,) + shape, np.float32))
    all_raws = parallel.gather_rows(np.concatenate(raws) if raws else
                                    np.zeros((0, E.n_styles, E.style_dim), np.float32))
    all_kept = [files[i] for k, _, _ in everyone for i in k]
    for q, (_, state, _) in enumerate(everyone):
        if q != p:
            report.merge(*state)
    if not all_kept:
        raise UsageError(f"none of the {len(files)} images could be read ({report.summary()})")
    if parallel.is_main():
        np.save(os.path.join(args.out, "codes.npy"), all_codes)
        np.save(os.path.join(args.out, "offsets.npy"), all_raws)
        with open(os.path.join(args.out, "files.txt"), "w") as f:
            f.write("\n".join(os.path.abspath(path) for path in all_kept) + "\n")
        if report.num_skipped:
            report.write_skipped(os.path.join(args.out, "skipped.txt"))
        with open(os.path.join(args.out, "inversion.json"), "w") as f:
            json.dump(inverter.setting.as_dict(), f, indent=1)
        grid = [pair for _, _, pv in everyone for pair in pv][:32]
        if grid:
            save_png(os.path.join(args.out, "recon_grid.png"), make_grid(np.stack(grid), ncols=4))
        print(f"inverted {len(all_kept)} images ({report.summary()}) to {args.out}: codes.npy "
              f"{all_codes.shape}, offsets.npy, files.txt" + ("" if args.no_recon else ", recon/")
              + f"; codes: {inverter.setting.describe()}")
    parallel.barrier("invert: written")
    return 0


# ----------------------------------------------------------------------------- SAGE
def _load_psp_for_method(path):
    from sage_jax import checkpoints

    return checkpoints.load_psp(_psp_path(path))


def _load_dictionary(psp_path, dictionary_path, required=True):
    """The dictionary from --dictionary, else from the checkpoint's ax.* (if complete)."""
    from sage_jax import checkpoints

    if dictionary_path:
        if not os.path.exists(dictionary_path):
            raise UsageError(f"dictionary {dictionary_path} does not exist")
        return checkpoints.load_dictionary(dictionary_path)
    if _model_dir(psp_path) and os.path.isdir(os.path.join(psp_path, "dictionary")):
        return checkpoints.load_dictionary(os.path.join(psp_path, "dictionary"))
    src = psp_path
    if os.path.isdir(psp_path):
        ax_file = os.path.join(psp_path, "ax.npz")
        src = dict(np.load(ax_file)) if os.path.exists(ax_file) else {}
    try:
        return checkpoints.load_dictionary(src)
    except checkpoints.CheckpointError as e:
        if required:
            raise UsageError(f"{psp_path} has no usable dictionary ({e}); pass --dictionary "
                             "(e.g. WORKDIR/dictionary from 'sage-jax train-dictionary')") from None
        return None


def cmd_embed(args) -> int:
    """The class statistics of the seen classes. Several processes: each encodes its
    share of the batches on its own devices, every process sums every batch in order
    (:func:`sage_jax.statistics.compute_class_statistics`, the same statistics as one
    process) and process 0 writes ``--out``."""
    from sage_jax.data import FolderDataset
    from sage_jax.statistics import compute_class_statistics

    _check_refine_args(args)
    psp = _load_psp_for_method(args.checkpoint)
    if psp.encoder is None:
        raise UsageError(f"{args.checkpoint} has no encoder")
    inverter = _inverter(args, psp)
    dictionary = _load_dictionary(args.checkpoint, args.dictionary, required=bool(args.dictionary))
    ds = FolderDataset.from_folder(args.data, psp.encoder.input_size, split=args.split)
    print(f"{len(ds)} images of {ds.num_classes} seen classes in {args.data}; codes: {inverter.setting.describe()}")
    stats = compute_class_statistics(inverter, ds, args.batch_size, dictionary, quiet=args.quiet)
    stats.save(args.out)
    extra = " and back-projected code statistics" if stats.moments is not None else \
        " (no dictionary: run again with --dictionary after train-dictionary)"
    print(f"wrote class embeddings of {stats.num_classes} classes{extra} to {args.out}"
          + f"; {ds.report.summary()}")
    return 0


def cmd_train_dictionary(args) -> int:
    from sage_jax.data import FolderDataset
    from sage_jax.statistics import ClassStatistics, add_code_moments, fingerprint
    from sage_jax.config import check_keys, check_section
    from sage_jax.train.dictionary import default_config, train_dictionary

    cfg = default_config()
    if args.config:
        from sage_jax.config import load_config

        full = load_config(args.config)
        if "dictionary" not in full:
            raise UsageError(f"{args.config} has no 'dictionary' section")
        try:
            check_keys(full.dictionary, cfg.keys(), f"the 'dictionary' section of {args.config}")
        except ValueError as e:
            raise UsageError(str(e)) from None
        cfg.update(full.dictionary)
    for name in ("steps", "batch_size", "lr", "a_length", "seed", "ckpt_every", "log_every",
                 "lambda_orth", "lambda_sparse", "orth_form", "init"):
        value = getattr(args, name)
        if value is not None:
            cfg[name] = value
    if args.groups:
        from sage_jax.nn.dictionary import OFFICIAL_GROUPS, PAPER_GROUPS

        cfg.groups = {"official": OFFICIAL_GROUPS, "paper": PAPER_GROUPS}[args.groups]
    try:
        check_section(cfg, "dictionary")
    except ValueError as e:
        raise UsageError(str(e)) from None
    _check_refine_args(args)
    psp = _load_psp_for_method(args.checkpoint)
    layers = [int(i) for g in cfg.groups for i in g]
    if psp.encoder is None:
        raise UsageError(f"{args.checkpoint} has no encoder")
    if not layers or min(layers) < 0 or max(layers) >= psp.encoder.n_styles:
        raise UsageError(f"dictionary groups {[list(g) for g in cfg.groups]} must use layers 0..{psp.encoder.n_styles - 1} "
                         f"(the encoder of {args.checkpoint} has {psp.encoder.n_styles} styles)")
    try:
        stats = ClassStatistics.load(args.stats)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if stats.encoder_fingerprint != fingerprint(psp.encoder.variables):
        raise UsageError(f"{args.stats} was made with a different encoder than {args.checkpoint}")
    inverter = _inverter(args, psp, default=stats.inversion)
    ds = FolderDataset.from_folder(args.data, psp.encoder.input_size, split=args.split,
                                   classes=stats.class_names)
    # the dictionary learns from the codes the statistics are made of: refined ones are made
    # once per image and shared with the moments
    from sage_jax.inversion import CachedInverter

    codes = CachedInverter(inverter) if inverter.setting.refines else None
    dictionary = train_dictionary(psp, stats, ds, cfg, args.workdir, quiet=args.quiet, codes=codes)
    out = os.path.join(args.workdir, "class_stats.npz")
    add_code_moments(stats, codes or inverter, ds, dictionary, args.batch_size or cfg.batch_size,
                     quiet=args.quiet).save(out)
    print(f"dictionary in {os.path.join(args.workdir, 'dictionary')}; class statistics with "
          f"back-projected codes in {out}; {ds.report.summary()}")
    return 0


def _shot_files(folder) -> dict[str, list[str]]:
    """{class: image files}: one sub-folder per class; else flat ``<class>_<i>`` files;
    else the folder is one class."""
    from sage_jax.images import list_images

    if not os.path.isdir(folder):
        raise UsageError(f"shots folder {folder} does not exist")
    subdirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if subdirs:
        return {d: list_images([os.path.join(folder, d)]) for d in subdirs}
    files = list_images([folder])
    names = [os.path.basename(f) for f in files]
    if files and all("_" in n for n in names):
        out: dict[str, list[str]] = {}
        for f, n in zip(files, names):
            out.setdefault(n.split("_")[0], []).append(f)
        return out
    return {os.path.basename(os.path.normpath(folder)): files}


def _read_shots(folder, size, k, report=None, classes=None, listing=None):
    """{class: (k, S, S, 3)} and {class: files used}: the first K readable images
    (skips and conversions counted in ``report``); of the ``classes`` named (in that
    order; default: every class of ``folder``). ``listing``: ``_shot_files(folder)``
    when the caller has it."""
    from sage_jax.images import ImageReport, try_load_image

    report = report if report is not None else ImageReport()
    listing = listing if listing is not None else _shot_files(folder)
    if not listing:
        raise UsageError(f"no classes found in {folder}")
    shots, sources = {}, {}
    for name in (listing if classes is None else classes):
        imgs, used = [], []
        for f in listing[name]:
            if len(imgs) == k:
                break
            img = try_load_image(f, size, report)
            if img is not None:
                imgs.append(img)
                used.append(f)
        if not imgs:
            raise UsageError(f"class {name!r} has no readable image ({report.summary()})")
        if len(imgs) < k:
            raise UsageError(f"class {name!r} has {len(imgs)} readable image(s), fewer than --k {k}")
        shots[name], sources[name] = np.stack(imgs), used
    return shots, sources


CODE_BLOCK = 1024   # W+ codes drawn per call by generate (about 38 MB at 18 x 512)


def _fill_from_model_dir(args) -> None:
    """generate --model DIR (or --checkpoint DIR, DIR a model directory from 'sage-jax
    train'): the encoder and decoder, the dictionary and the statistics from DIR;
    flags given explicitly win."""
    model = args.model
    if model is not None:
        if not os.path.isdir(model):
            raise UsageError(f"--model {model} does not exist")
        if not _model_dir(model):
            raise UsageError(f"--model {model} is not {MODEL_DIR_HINT}")
    elif args.checkpoint and os.path.isdir(args.checkpoint) and _model_dir(args.checkpoint):
        model = args.checkpoint
    if model is None:
        if not args.checkpoint or not args.stats:
            raise UsageError("give --checkpoint and --stats (and --dictionary unless the checkpoint has one), "
                             f"or --model DIR, {MODEL_DIR_HINT}")
        return
    if not args.checkpoint or args.checkpoint == model:
        args.checkpoint = os.path.join(model, "psp")
    if args.dictionary is None and os.path.isdir(os.path.join(model, "dictionary")):
        args.dictionary = os.path.join(model, "dictionary")
    if args.stats is None:
        args.stats = os.path.join(model, "class_stats.npz")
        if not os.path.isfile(args.stats):
            raise UsageError(f"model directory {model} has no class_stats.npz: pass --stats")
    cfg_path = os.path.join(model, "config.json")
    if os.path.isfile(cfg_path):   # the model's own generation defaults (its config's 'generation' section)
        with open(cfg_path) as f:
            args.model_generation = json.load(f).get("generation") or {}


def cmd_generate(args) -> int:
    """Few-shot generation for every class of ``--shots``: OUT/<class>/ holds the
    class's ``<mode>_NNNN.png`` images (and fused variants), ``shots.png`` and
    ``grid_<mode>.png``; OUT/generation.json the setting and, with ``--save-codes``,
    OUT/codes.npy (classes in sorted order, n, L, D).

    Class ``c`` of the sorted class list draws from ``fold_in(PRNGKey(seed), c)`` (its
    samples ``j`` from that key as :func:`sage_jax.generation.sample_codes`' query 0),
    whatever the other classes and whichever process makes it. Several processes:
    process ``p`` takes its contiguous share of the sorted classes
    (:func:`sage_jax.parallel.process_share`), decodes them on its own devices
    (``--batch-size`` images per device and call) and writes only its classes'
    folders; process 0 writes generation.json and codes.npy (the other processes
    hand over their codes one class at a time). The images are byte for byte those of
    one process with the same seed; every process returns once everything is
    written."""
    import jax
    from tqdm import tqdm

    from sage_jax.generation import SageGenerator, SampleOptions, model_defaults
    from sage_jax.images import make_grid, save_png, to_uint8, write_images
    from sage_jax.statistics import ClassStatistics

    if args.k < 1 or args.n < 1:
        raise UsageError("--k and --n must be at least 1")
    _check_refine_args(args)
    _fill_from_model_dir(args)
    psp = _load_psp_for_method(args.checkpoint)
    if args.dtype != "float32":
        from sage_jax.models import PSPModel

        psp = PSPModel(psp.encoder, psp.decoder.astype(args.dtype), psp.latent_avg, psp.config, ax=psp.ax)
    dictionary = _load_dictionary(args.checkpoint, args.dictionary)
    try:
        stats = ClassStatistics.load(args.stats)
    except ValueError as e:
        raise UsageError(str(e)) from None
    inverter = _inverter(args, psp, default=stats.inversion)
    try:
        gen = SageGenerator(psp, dictionary, stats, inversion=inverter)
    except ValueError as e:
        raise UsageError(str(e)) from None
    S, r, l = stats.num_classes, gen.state.basis.shape[1], dictionary.a_length

    def pick(value, default, limit, name, why=""):
        if value is not None:
            return value
        if default > limit:
            print(f"note: {name} defaults to {default}, this model allows at most {limit}: using {limit}{why}")
        return min(default, limit)

    defaults = model_defaults(getattr(args, "model_generation", None))   # the paper's unless the model says
    t_B, t_A = defaults["t_B"], defaults["t_A"]
    adaptive_off = ("; that keeps every direction, so adaptive editing is off (the paper keeps 50 of 100: "
                    f"try --t-a {max(1, l // 2)})") if args.mode in ("sage", "sage-i") else ""
    opts = SampleOptions(
        mode=args.mode,
        t_B=tuple(args.t_b) if args.t_b else (pick(None, t_B, r, "t_B"),),
        retrieval_t_B=pick(None, t_B, r, "retrieval t_B"),
        t_C=pick(args.t_c, 30 if args.k == 1 else 20, S, "t_C"),
        t_A=pick(args.t_a, t_A, l, "t_A", adaptive_off),
        alpha=args.alpha)
    try:
        from sage_jax.generation import check_options

        check_options(opts, gen.state, args.k)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from sage_jax import parallel
    from sage_jax.images import ImageReport
    from sage_jax.models import default_chunk

    # the classes are split over the processes by their index in the sorted list; each
    # process reads the shots of its own classes, and a class that cannot be read stops
    # every process (the first such class's message, as one process gives)
    listing = _shot_files(args.shots)
    names = sorted(listing)
    if not names:
        raise UsageError(f"no classes found in {args.shots}")
    mine = [names[i] for i in parallel.process_share(len(names))]
    report = ImageReport()
    try:
        shots, sources = _read_shots(args.shots, psp.encoder.input_size, args.k, report, mine, listing)
        error = None
    except UsageError as e:
        shots, sources, error = {}, {}, str(e)
    everyone = parallel.allgather_objects((error, sources, report.state()))
    errors = [e for e, _, _ in everyone if e]
    if errors:
        raise UsageError(errors[0])
    os.makedirs(args.out, exist_ok=True)
    G = psp.decoder
    key = jax.random.PRNGKey(args.seed)
    index = {name: i for i, name in enumerate(names)}
    kept_codes: dict | None = {} if args.save_codes else None
    open_classes: dict = {}   # name -> what its images still need (folder, shots, grid so far, images written)

    def code_blocks():
        """This process's classes' codes, a block at a time (memory stays bounded however
        large --n is; the codes are those of a single call): class c of the sorted list
        draws from fold_in(key, c), whichever process makes it."""
        for name in tqdm(mine, desc="classes", unit="class", disable=args.quiet or not parallel.is_main()):
            x = shots.pop(name)
            raw = gen.encode(x)
            cdir = os.path.join(args.out, name)
            os.makedirs(cdir, exist_ok=True)
            shots_u8 = to_uint8(x)
            if shots_u8.shape[1] != G.size:
                from PIL import Image

                shots_u8 = np.stack([np.asarray(Image.fromarray(s).resize((G.size, G.size), Image.BILINEAR))
                                     for s in shots_u8])
            save_png(os.path.join(cdir, "shots.png"), make_grid(shots_u8, ncols=len(shots_u8)))
            inv = to_uint8(G(psp.absolute_codes(raw), input_is_latent=True)) if args.fusion != "none" else None
            open_classes[name] = {"dir": cdir, "shots": shots_u8, "inv": inv, "grid": [], "done": 0}
            blocks = []
            for block in gen.code_blocks(jax.random.fold_in(key, index[name]), raw[None], args.n, opts,
                                         block=CODE_BLOCK):
                block = np.asarray(block[0])
                if kept_codes is not None:
                    blocks.append(block)
                yield name, block
            if kept_codes is not None:
                kept_codes[name] = np.concatenate(blocks)

    def after_chunk(c, first, u8):
        """The grid's first 64 images, and the fused images of this chunk."""
        c["grid"].extend(u8[: max(0, 64 - len(c["grid"]))])
        if c["inv"] is not None:
            from sage_jax.sage.fusion import fuse

            idx = (first + np.arange(len(u8))) % len(c["shots"])
            fused = np.asarray(fuse(c["shots"][idx], c["inv"][idx], u8, args.fusion))
            for j, im in enumerate(fused):
                save_png(os.path.join(c["dir"], f"{opts.mode}_fused_{args.fusion}_{first + j:04d}.png"), im)

    # every local device decodes --batch-size images per call (at most --n): the same
    # shapes on any number of devices and processes, hence the same images
    chunk = min(int(args.batch_size or default_chunk(G)), args.n)
    for name, images in gen.decode_local(code_blocks(), chunk):
        c = open_classes[name]
        c["done"] += write_images([images], c["dir"], opts.mode, start=c["done"],
                                  on_chunk=lambda first, u8, c=c: after_chunk(c, first, u8))
        if c["done"] == args.n:
            save_png(os.path.join(c["dir"], f"grid_{opts.mode}.png"), make_grid(np.stack(c["grid"])))
            del open_classes[name]
    if args.save_codes:
        _write_codes(os.path.join(args.out, "codes.npy"), names, kept_codes, args.n)
    if parallel.is_main():
        all_sources = {n: src for _, part, _ in everyone for n, src in part.items()}
        shot_report = ImageReport()
        for _, _, state in everyone:
            shot_report.merge(*state)
        with open(os.path.join(args.out, "generation.json"), "w") as f:
            json.dump({"checkpoint": os.path.abspath(args.checkpoint), "stats": os.path.abspath(args.stats),
                       "k": args.k, "n": args.n, "seed": args.seed, "fusion": args.fusion,
                       "inversion": inverter.setting.as_dict(),
                       "options": {"mode": opts.mode, "t_B": list(opts.t_B), "retrieval_t_B": opts.retrieval_t_B,
                                   "t_C": opts.t_C, "t_A": opts.t_A, "alpha": opts.alpha},
                       "classes": {n: all_sources[n] for n in names}, "images": shot_report.as_dict()}, f, indent=1)
        print(f"wrote {args.n} {opts.mode} images for each of {len(names)} classes to {args.out}; "
              f"shots: {shot_report.summary()}")
    parallel.barrier("generate: written")
    return 0


def _write_codes(path, names, kept, n) -> None:
    """codes.npy (classes, n, L, D) in the sorted class order, written by process 0: in
    round r every process hands over the codes of its r-th class (each holds only its
    own classes' codes; process 0 one round's more)."""
    from sage_jax import parallel

    shares = parallel.process_shares(len(names))
    mine = [names[i] for i in parallel.process_share(len(names))]
    some = next(iter(kept.values()), None)
    shape = parallel.allgather_objects(None if some is None else some.shape[1:])
    L, D = next(s for s in shape if s is not None)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(names), n, L, D)) \
        if parallel.is_main() else None
    for r in range(max(len(sh) for sh in shares)):
        part = kept.pop(mine[r]) if r < len(mine) else np.zeros((n, L, D), np.float32)
        everyone = parallel.gather_rows(part[None].astype(np.float32))
        if out is not None:
            for q, sh in enumerate(shares):
                if r < len(sh):
                    out[sh[r]] = everyone[q]
    if out is not None:
        out.flush()
        del out


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("sample", help="generate images from seeds or latents")
    s.add_argument("--checkpoint", required=True,
                   help=".pt file (g_ema, or the decoder of a pSp/AGE/SAGE file), a converted model directory, "
                        "a pSp directory or a model directory from 'sage-jax train' (its psp/decoder)")
    s.add_argument("--which", default=None, choices=["g_ema", "g"],
                   help="entry of a rosinality checkpoint to use (default g_ema)")
    s.add_argument("--out", default="samples", help="output directory (default ./samples)")
    s.add_argument("--n", type=int, default=16, help="number of images when --seeds is not given (default 16)")
    s.add_argument("--seed", type=int, default=0,
                   help="first seed (images use seeds seed..seed+n-1); also keys the truncation mean")
    s.add_argument("--seeds", default=None, help="explicit seeds, e.g. 0-15 or 3,7,42: z = normal(PRNGKey(seed))")
    s.add_argument("--latents", default=None,
                   help=".npy of codes instead of seeds: z (N, D), or W (N, D) / W+ (N, L, D) with --input-is-latent")
    s.add_argument("--input-is-latent", action="store_true", help="--latents are W or W+ codes, not z")
    s.add_argument("--class-label", dest="class_label", type=int, default=None,
                   help="class-conditional generators: every image of class K (its truncation centre is the "
                        "class's mean W)")
    s.add_argument("--labels", default=None,
                   help="class-conditional generators: .npy of one label per image, class indices (N,) or "
                        "probability vectors (N, C)")
    s.add_argument("--truncation", type=float, default=1.0, help="truncation psi in [0, 1] (default 1: none)")
    s.add_argument("--truncation-samples", type=int, default=4096,
                   help="z samples averaged for the truncation center (default 4096)")
    s.add_argument("--noise", default="stored", choices=["stored", "random"],
                   help="stored: the checkpoint's noise buffers (deterministic); random: per-image noise from its seed")
    s.add_argument("--batch-size", type=int, default=16, help="images per jitted call (default 16)")
    s.add_argument("--grid-cols", type=int, default=None, help="columns of grid.png (default: square)")
    s.add_argument("--save-array", default=None, help="also save the raw float32 images (N, H, W, 3) to this .npy")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("invert", help="encode images to W+ codes with a pSp/AGE/SAGE encoder")
    s.add_argument("--checkpoint", required=True,
                   help="pSp, AGE or SAGE .pt file, a pSp directory (save_psp, train-encoder's psp/) or a model "
                        "directory from 'sage-jax train' (its psp/)")
    s.add_argument("--images", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--batch-size", type=int, default=8,
                   help="images per device and jitted call (default 8)")
    s.add_argument("--noise", default="stored", choices=["stored", "random"],
                   help="noise of the reconstructions (default: the checkpoint's stored noise)")
    s.add_argument("--seed", type=int, default=0, help="key for --noise random")
    s.add_argument("--no-recon", action="store_true", help="write codes only, no reconstructions")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_refine_args(s, "default")
    s.set_defaults(func=cmd_invert)

    s = sub.add_parser("embed", help="class statistics of the seen classes (class embeddings, back-projected codes)")
    s.add_argument("--checkpoint", required=True, help="pSp/AGE/SAGE .pt file or model directory")
    s.add_argument("--data", required=True, help="seen-class images: <class>/<image> folders or <class>_<i>.jpg files")
    s.add_argument("--split", default=None, help="sub-folder of --data to use (e.g. train)")
    s.add_argument("--dictionary", default=None,
                   help="dictionary for the back-projected codes (default: the checkpoint's ax.*, if complete)")
    s.add_argument("--out", required=True, help="statistics file to write (.npz)")
    s.add_argument("--batch-size", type=int, default=16,
                   help="images per encoder call, on each device (default 16)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_refine_args(s, "default; recorded in the statistics, and generate's shots must be made the same way")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("train-dictionary", help="learn the attribute dictionary (generator and encoder frozen)")
    s.add_argument("--checkpoint", required=True, help="pSp/AGE/SAGE .pt file or model directory")
    s.add_argument("--data", required=True, help="seen-class images (as for embed)")
    s.add_argument("--split", default=None, help="sub-folder of --data to use (e.g. train)")
    s.add_argument("--stats", required=True, help="class statistics from 'sage-jax embed'")
    s.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, the final dictionary")
    s.add_argument("--config", default=None, help="config file with a 'dictionary' section")
    s.add_argument("--steps", type=int, default=None, help="training steps (default 15000)")
    s.add_argument("--batch-size", type=int, default=None, help="global batch size (default 8)")
    s.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-4)")
    s.add_argument("--a-length", dest="a_length", type=int, default=None, help="dictionary size l (default 100)")
    s.add_argument("--groups", default=None, choices=["official", "paper"],
                   help="layer groups: official {0-2},{3-5} (default) or paper {0-2},{3-6},{7-17}")
    s.add_argument("--lambda-orth", dest="lambda_orth", type=float, default=None, help="default 5e-4")
    s.add_argument("--lambda-sparse", dest="lambda_sparse", type=float, default=None, help="default 5e-3")
    s.add_argument("--orth-form", dest="orth_form", default=None, choices=["l1", "frobenius"],
                   help="orthogonality loss: the code's L1 form (default) or the paper's Frobenius norm")
    s.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    s.add_argument("--init", default=None, choices=["random", "pca"],
                   help="A's start: N(0, 1) as the originals (default), or the principal directions of the "
                        "codes' within-class deviations")
    s.add_argument("--ckpt-every", dest="ckpt_every", type=int, default=None, help="checkpoint interval (default 500)")
    s.add_argument("--log-every", dest="log_every", type=int, default=None, help="metrics interval (default 10)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_refine_args(s, "default: the setting --stats was made with; another is refused")
    s.set_defaults(func=cmd_train_dictionary)

    s = sub.add_parser("generate", help="few-shot generation for unseen classes (SAGE, AGE, SAGE-Q, SAGE-I)")
    s.add_argument("--model", default=None,
                   help="a model directory from 'sage-jax train' (e.g. sage_jax/assets/tiny_model): the "
                        "checkpoint, dictionary and statistics in it (flags given explicitly win)")
    s.add_argument("--checkpoint", default=None,
                   help="pSp/AGE/SAGE .pt file, pSp directory, or a model directory (as --model)")
    s.add_argument("--stats", default=None, help="class statistics with back-projected codes")
    s.add_argument("--dictionary", default=None, help="dictionary (default: the checkpoint's ax.*)")
    s.add_argument("--shots", required=True,
                   help="unseen classes: one folder per class (or <class>_<i> files, or one folder = one class)")
    s.add_argument("--k", type=int, default=1, help="shots per class (the first K readable images, sorted)")
    s.add_argument("--n", type=int, default=16, help="images to generate per class (default 16)")
    s.add_argument("--mode", default="sage", choices=["sage", "sage-q", "sage-i", "age"],
                   help="sage (default), sage-q (no adaptive editing), sage-i (no embedding mapping), age")
    s.add_argument("--t-b", dest="t_b", type=int, nargs="+", default=None,
                   help="category-relevant directions kept by the embedding mapping; several values are "
                        "cycled over the samples (default 10, the paper's; with --model, the model config's "
                        "generation.t_B)")
    s.add_argument("--t-c", dest="t_c", type=int, default=None,
                   help="similar seen classes retrieved (default 30 for 1-shot, 20 for K-shot)")
    s.add_argument("--t-a", dest="t_a", type=int, default=None,
                   help="dictionary directions kept by the adaptive editing (default 50, the paper's, of its "
                        "100; with --model, the model config's generation.t_A)")
    s.add_argument("--alpha", type=float, default=1.0, help="editing strength (default 1; the paper's best NAS: 2)")
    s.add_argument("--fusion", default="none", choices=["none", "p", "f", "pf"],
                   help="also write SAGE_p / SAGE_f / both fused images")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--batch-size", type=int, default=None,
                   help="images per generator call on each device (default: by memory; at most --n)")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="the generator's compute dtype (bfloat16: on average under one 8-bit level from float32; "
                        "faster on GPUs/TPUs, not on CPUs)")
    s.add_argument("--save-codes", action="store_true", help="also save the edited raw W+ codes (codes.npy)")
    s.add_argument("--out", required=True, help="output directory: one folder per class")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_refine_args(s, "default: the setting the statistics were made with; another is refused")
    s.set_defaults(func=cmd_generate)
