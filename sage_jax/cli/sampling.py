"""``sample``: images from seeds or latents of a generator (a model's decoder, a
converted generator, a ``.pt`` file); class-conditional generators by class name or
label."""

from __future__ import annotations

import os

import numpy as np

from sage_jax.cli.common import MODEL_DIR_HINT, MODEL_HELP, enclosing_model, model_arg, model_dir, resolve
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


def _generator(args):
    """(the generator of --model / --checkpoint, the directory its class names are read
    from or None)."""
    from sage_jax import checkpoints

    model = model_arg(args)
    src = resolve(args.checkpoint, "--checkpoint",
                  "a .pt file, a generator, pSp or model directory") if args.checkpoint else model
    if src is None:
        raise UsageError(f"give --model tiny (the model shipped with sage-jax) or --model DIR ({MODEL_DIR_HINT}), "
                         "or --checkpoint FILE|DIR (a .pt file, a generator, pSp or model directory)")
    if os.path.isdir(src):
        names_from = enclosing_model(src) or os.path.dirname(os.path.abspath(src))   # train-gan's WORKDIR/g_ema
        path = src
        if model_dir(path):                                    # sage-jax train's model directory
            path = os.path.join(path, "psp")
        if os.path.isfile(os.path.join(path, "psp.json")):     # a pSp directory: its decoder
            path = checkpoints.psp_part(path, "decoder")
        if not os.path.isfile(os.path.join(path, "model.json")):
            raise UsageError(f"{src} is neither a generator directory (model.json, from "
                             f"'sage-jax convert' or train-gan), a pSp directory (psp.json) nor {MODEL_DIR_HINT}")
        return checkpoints.load_generator(path, dtype=args.dtype), names_from
    ckpt = checkpoints.read_torch(src)
    if args.which and isinstance(ckpt, dict) and args.which in ckpt:
        ckpt = ckpt[args.which]
    return checkpoints.load_generator(ckpt, dtype=args.dtype), None


def cmd_sample(args) -> int:
    import jax
    import jax.numpy as jnp
    from tqdm import tqdm

    from sage_jax.images import make_grid, save_png, to_uint8

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0.0 <= args.truncation <= 1.0:
        raise UsageError("--truncation must lie in [0, 1]")
    G, names_from = _generator(args)

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
    label_rows, center_labels = _sample_labels(args, G, n, input_is_latent, names_from)

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


def _class_names(G, names_from) -> tuple[list[str], str]:
    """The generator's class names in label order, and where they came from."""
    if names_from is not None:
        from sage_jax.statistics import model_class_names

        return model_class_names(names_from, G.c_dim)
    return [f"class_{i}" for i in range(G.c_dim)], "no class names stored with the checkpoint"


def class_label(name: str, names: list[str], source: str) -> int:
    """The label of class ``name``; a name that is not one is refused with the close ones."""
    if name in names:
        return names.index(name)
    import difflib

    close = [n for n in names if name.lower() in n.lower()]
    close += [n for n in difflib.get_close_matches(name, names, n=5, cutoff=0.5) if n not in close]
    if close:
        hint = "close: " + ", ".join(close[:8]) + (f" (and {len(close) - 8} more)" if len(close) > 8 else "")
    else:
        hint = f"the {len(names)} classes are " + ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    raise UsageError(f"unknown class {name!r}; {hint} (names: {source}); or give --class-label K (0..{len(names) - 1})")


def _sample_labels(args, G, n, input_is_latent, names_from=None):
    """Label vectors (n, c_dim) for a class-conditional generator fed z (else None), and
    the labels its truncation centre averages over (the class of --class / --class-label,
    else every class in turn). Says which class each label is."""
    from sage_jax.models import label_vectors

    given = [flag for flag, value in (("--class", args.class_name), ("--class-label", args.class_label),
                                      ("--labels", args.labels)) if value is not None]
    if not given:
        if G.c_dim and not input_is_latent:
            names, _ = _class_names(G, names_from)
            raise UsageError(f"this generator is class-conditional ({G.c_dim} classes): pass --class NAME "
                             f"(e.g. --class {names[0]}), --class-label K or --labels FILE.npy")
        return None, None
    if not G.c_dim:
        raise UsageError("--class / --class-label / --labels need a class-conditional generator; this one is "
                         "unconditional")
    if input_is_latent:
        raise UsageError("W / W+ codes already carry their class: --class / --class-label / --labels apply to z")
    if len(given) > 1:
        raise UsageError(f"give one of --class, --class-label and --labels, not {' and '.join(given)}")
    names, source = _class_names(G, names_from)
    if args.class_name is not None or args.class_label is not None:
        if args.class_name is not None:
            label = class_label(args.class_name, names, source)
        else:
            label = args.class_label
            if not 0 <= label < G.c_dim:
                raise UsageError(f"--class-label must lie in [0, {G.c_dim}), got {label}")
        print(f"class {label}: {names[label]} (one of the generator's {G.c_dim} classes; names: {source})")
        return np.eye(G.c_dim, dtype=np.float32)[np.full(n, label)], np.full(args.truncation_samples, label)
    try:
        raw = np.load(args.labels)
        rows = np.asarray(label_vectors(raw, G.c_dim, n, what=f"--labels {args.labels}"))
    except (OSError, ValueError) as e:
        raise UsageError(str(e)) from None
    if raw.ndim == 1:
        labels, counts = np.unique(raw, return_counts=True)
        print("classes: " + ", ".join(f"{int(c)} images of {int(l)} {names[int(l)]}" for l, c in zip(labels, counts))
              + f" (names: {source})")
    else:
        print(f"labels: probability vectors over the generator's {G.c_dim} classes (names: {source})")
    return rows, None


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("sample", help="generate images from seeds or latents")
    s.add_argument("--model", default=None, help=f"{MODEL_HELP}: its generator (the decoder)")
    s.add_argument("--checkpoint", default=None,
                   help=".pt file (g_ema, or the decoder of a pSp/AGE/SAGE file), a converted model directory, "
                        "a pSp directory or a model directory from 'sage-jax train' (its psp/decoder); 'tiny' "
                        "as for --model")
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
    s.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="class-conditional generators: every image of the class named NAME (a model's seen "
                        "classes, e.g. arrow-blue-stripes-r0 for the tiny model; its truncation centre is the "
                        "class's mean W)")
    s.add_argument("--class-label", dest="class_label", type=int, default=None, metavar="K",
                   help="class-conditional generators: every image of class K, by its label (the name is printed)")
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
