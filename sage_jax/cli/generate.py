"""``generate``: few-shot generation for unseen classes (SAGE, AGE, SAGE-Q, SAGE-I) from
the shots in a folder, with a model directory (``--model tiny`` or a path) or its parts
named one by one."""

from __future__ import annotations

import json
import os

import numpy as np

from sage_jax.cli.common import (MODEL_DIR_HINT, MODEL_HELP, add_refine_args, check_refine_args, load_dictionary,
                                 load_psp, model_arg, model_dir, resolve)
from sage_jax.cli.common import inverter as make_inverter
from sage_jax.errors import UsageError


CODE_BLOCK = 1024   # W+ codes drawn per call by generate (about 38 MB at 18 x 512)


def _fill_from_model_dir(args) -> None:
    """generate --model DIR (or --checkpoint DIR, DIR a model directory from 'sage-jax
    train'; or 'tiny', the shipped one): the encoder and decoder, the dictionary and the
    statistics from DIR; flags given explicitly win."""
    model = model_arg(args)
    args.checkpoint = resolve(args.checkpoint, "--checkpoint",
                              "a pSp/AGE/SAGE .pt file, a pSp directory or a model directory from 'sage-jax train'")
    if model is None and args.checkpoint and os.path.isdir(args.checkpoint) and model_dir(args.checkpoint):
        model = args.checkpoint
    if model is None:
        if not args.checkpoint or not args.stats:
            raise UsageError("give --model tiny (the model shipped with sage-jax) or --model DIR, "
                             f"{MODEL_DIR_HINT}; or --checkpoint and --stats (and --dictionary unless the checkpoint "
                             "has one)")
        return
    if not args.checkpoint or args.checkpoint == model:
        args.checkpoint = os.path.join(model, "psp")
    if args.dictionary is None and os.path.isdir(os.path.join(model, "dictionary")):
        args.dictionary = os.path.join(model, "dictionary")
    if args.stats is None:
        args.stats = os.path.join(model, "class_stats.npz")
        args.stats_of_model = True
        if not os.path.isfile(args.stats):
            raise UsageError(f"model directory {model} has no class_stats.npz: pass --stats")
    cfg_path = os.path.join(model, "config.json")
    if os.path.isfile(cfg_path):   # the model's own generation defaults (its config's 'generation' section)
        with open(cfg_path) as f:
            args.model_generation = json.load(f).get("generation") or {}


def _read_shots(folder, size, k, classes, listing, report):
    """{class: (k, S, S, 3)} and {class: files used}: the first K readable images of
    each of ``classes`` (``listing``: :func:`sage_jax.data.folders.class_files` of
    ``folder``; skips and conversions counted in ``report``)."""
    from sage_jax.data.folders import read_first

    shots, sources = {}, {}
    for name in classes:
        imgs, used = read_first(listing[name], size, k, report)
        if imgs is None:
            raise UsageError(f"class {name!r} of {folder} has no readable image ({report.summary()})")
        if len(imgs) < k:
            raise UsageError(f"class {name!r} has {len(imgs)} readable image(s), fewer than --k {k}")
        shots[name], sources[name] = imgs, used
    return shots, sources


def cmd_generate(args) -> int:
    """Few-shot generation for every class of ``--shots``: OUT/<class>/ holds the
    class's ``<mode>_NNNN.png`` images (and fused variants), ``shots.png`` and
    ``grid_<mode>.png``; OUT/generation.json the setting, OUT/skipped.txt the shot files
    that could not be read (path, kind, reason; always written, empty when none) and,
    with ``--save-codes``, OUT/codes.npy (classes in sorted order, n, L, D).

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

    from sage_jax.data.folders import class_files
    from sage_jax.generation import SageGenerator, default_options
    from sage_jax.images import make_grid, save_png, to_uint8, write_images
    from sage_jax.statistics import ClassStatistics

    if args.k < 1 or args.n < 1:
        raise UsageError("--k and --n must be at least 1")
    check_refine_args(args)
    _fill_from_model_dir(args)
    # the shots' classes before any network is loaded: a wrong --shots is said at once
    listing = class_files(args.shots, what="--shots")
    psp = load_psp(args.checkpoint)
    if args.dtype != "float32":
        from sage_jax.models import PSPModel

        psp = PSPModel(psp.encoder, psp.decoder.astype(args.dtype), psp.latent_avg, psp.config, ax=psp.ax)
    dictionary = load_dictionary(args.checkpoint, args.dictionary)
    try:
        stats = ClassStatistics.load(args.stats)
    except ValueError as e:
        raise UsageError(str(e)) from None
    what = "the model's class statistics" if getattr(args, "stats_of_model", False) else \
        f"the class statistics {args.stats}"
    inverter = make_inverter(args, psp, required=stats.inversion, what=what)
    try:
        gen = SageGenerator(psp, dictionary, stats, inversion=inverter)
    except ValueError as e:
        raise UsageError(str(e)) from None
    l = dictionary.a_length

    def note(name, default, limit):
        why = ("; that keeps every direction, so adaptive editing is off (the paper keeps 50 of 100: "
               f"try --t-a {max(1, l // 2)})") if name == "t_A" and args.mode in ("sage", "sage-i") else ""
        print(f"note: {name} defaults to {default}, this model allows at most {limit}: using {limit}{why}")

    # the paper's settings unless the model's config says otherwise, capped by the model
    opts = default_options(args.mode, args.k, seen_classes=stats.num_classes, directions=gen.state.basis.shape[1],
                           a_length=l, generation=getattr(args, "model_generation", None), alpha=args.alpha,
                           t_B=args.t_b, t_C=args.t_c, t_A=args.t_a, note=note)
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
    names = sorted(listing)
    mine = [names[i] for i in parallel.process_share(len(names))]
    report = ImageReport()
    try:
        shots, sources = _read_shots(args.shots, psp.encoder.input_size, args.k, mine, listing, report)
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
        # the shot files that could not be read (path, kind, reason): always written, empty when none
        shot_report.write_skipped(os.path.join(args.out, "skipped.txt"))
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
    s = sub.add_parser("generate", help="few-shot generation for unseen classes (SAGE, AGE, SAGE-Q, SAGE-I)")
    s.add_argument("--model", default=None,
                   help=f"{MODEL_HELP}: the checkpoint, dictionary and statistics in it (flags given explicitly "
                        "win)")
    s.add_argument("--checkpoint", default=None,
                   help="pSp/AGE/SAGE .pt file, pSp directory, or a model directory (as --model)")
    s.add_argument("--stats", default=None, help="class statistics with back-projected codes")
    s.add_argument("--dictionary", default=None, help="dictionary (default: the checkpoint's ax.*)")
    s.add_argument("--shots", required=True,
                   help="unseen classes: a folder of class folders (one class each), or a folder of images (one "
                        "class, named after the folder; <class>_<i> files: one class per <class>)")
    s.add_argument("--k", "--k-shot", dest="k", type=int, default=1,
                   help="shots per class (the first K readable images, sorted)")
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
    add_refine_args(s, "default: the setting the statistics were made with; another is refused")
    s.set_defaults(func=cmd_generate)
