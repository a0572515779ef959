"""``invert`` (W+ codes of images) and ``embed`` (class statistics of the seen
classes): images to codes with a pSp/AGE/SAGE encoder, refined as the model's own
statistics were unless the flags say otherwise."""

from __future__ import annotations

import json
import os

import numpy as np

from sage_jax.cli.common import (MODEL_HELP, add_refine_args, check_refine_args, encoder_source,
                                 enclosing_model, load_dictionary, load_psp, model_setting)
from sage_jax.cli.common import inverter as make_inverter
from sage_jax.errors import UsageError


def _model_inverter(args, psp, source, model):
    """The Inverter of the flags; what they leave open from the model's setting with
    --model (as its class statistics were made), else the encoder's codes (a model
    directory given as --checkpoint is mentioned with its setting)."""
    if model is not None and os.path.abspath(source) != os.path.abspath(model) and \
            enclosing_model(source) != os.path.abspath(model):
        return make_inverter(args, psp)      # --checkpoint names other networks: the model's setting is not theirs
    if model is not None:
        return make_inverter(args, psp, default=model_setting(model))
    return make_inverter(args, psp, other=model_setting(enclosing_model(source)))


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

    from sage_jax import parallel
    from sage_jax.images import ImageReport, list_images, make_grid, save_png, to_uint8, try_load_image

    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_refine_args(args)
    source, model = encoder_source(args)
    psp = load_psp(source)
    inverter = _model_inverter(args, psp, source, model)
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
        report.write_skipped(os.path.join(args.out, "skipped.txt"))   # always: empty when nothing was skipped
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



# ----------------------------------------------------------------------------- embed
def cmd_embed(args) -> int:
    """The class statistics of the seen classes. Several processes: each encodes its
    share of the batches on its own devices, every process sums every batch in order
    (:func:`sage_jax.statistics.compute_class_statistics`, the same statistics as one
    process) and process 0 writes ``--out``."""
    from sage_jax.data import FolderDataset
    from sage_jax.statistics import compute_class_statistics

    check_refine_args(args)
    source, model = encoder_source(args)
    psp = load_psp(source)
    inverter = _model_inverter(args, psp, source, model)
    dictionary = load_dictionary(source, args.dictionary, required=bool(args.dictionary))
    ds = FolderDataset.from_folder(args.data, psp.encoder.input_size, split=args.split)
    print(f"{len(ds)} images of {ds.num_classes} seen classes in {args.data}")
    stats = compute_class_statistics(inverter, ds, args.batch_size, dictionary, quiet=args.quiet)
    stats.save(args.out)
    extra = " and back-projected code statistics" if stats.moments is not None else \
        " (no dictionary: run again with --dictionary after train-dictionary)"
    print(f"wrote class embeddings of {stats.num_classes} classes{extra} to {args.out}"
          + f"; {ds.report.summary()}")
    return 0



# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("invert", help="encode images to W+ codes with a pSp/AGE/SAGE encoder")
    s.add_argument("--model", default=None,
                   help=f"{MODEL_HELP}: its encoder and decoder, and its inversion setting (as its class "
                        "statistics were made, e.g. 25 refinement steps for the tiny model)")
    s.add_argument("--checkpoint", default=None,
                   help="pSp, AGE or SAGE .pt file, a pSp directory (save_psp, train-encoder's psp/) or a model "
                        "directory from 'sage-jax train' (its psp/; the encoder's codes unless refinement is asked)")
    s.add_argument("--images", required=True, nargs="+", help="image files and/or folders (searched recursively)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--batch-size", type=int, default=8,
                   help="images per device and jitted call (default 8)")
    s.add_argument("--noise", default="stored", choices=["stored", "random"],
                   help="noise of the reconstructions (default: the checkpoint's stored noise)")
    s.add_argument("--seed", type=int, default=0, help="key for --noise random")
    s.add_argument("--no-recon", action="store_true", help="write codes only, no reconstructions")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_refine_args(s, "default without --model; with --model, the model's setting")
    s.set_defaults(func=cmd_invert)

    s = sub.add_parser("embed", help="class statistics of the seen classes (class embeddings, back-projected codes)")
    s.add_argument("--model", default=None,
                   help=f"{MODEL_HELP}: its encoder, dictionary and inversion setting")
    s.add_argument("--checkpoint", default=None, help="pSp/AGE/SAGE .pt file or model directory")
    s.add_argument("--data", required=True, help="seen-class images: <class>/<image> folders or <class>_<i>.jpg files")
    s.add_argument("--split", default=None, help="sub-folder of --data to use (e.g. train)")
    s.add_argument("--dictionary", default=None,
                   help="dictionary for the back-projected codes (default: the checkpoint's ax.*, if complete)")
    s.add_argument("--out", required=True, help="statistics file to write (.npz)")
    s.add_argument("--batch-size", type=int, default=16,
                   help="images per encoder call, on each device (default 16)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_refine_args(s, "default without --model; with --model, the model's setting; recorded in the statistics, "
                       "and generate's shots must be made the same way")
    s.set_defaults(func=cmd_embed)

