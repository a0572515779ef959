"""``build-dataset`` (a TFDS dataset from image folders), ``make-synthetic`` (the
synthetic ground-truth dataset as image folders) and ``make-glyphs`` (the font-glyph
dataset from installed fonts, docs/glyphs.md)."""

from __future__ import annotations

import os


from sage_jax.errors import UsageError


# ----------------------------------------------------------------------------- datasets
def cmd_build_dataset(args) -> int:
    from sage_jax.data import tfds_data

    if bool(args.root) == bool(args.flowers102_manual_dir):
        raise UsageError("give --root (a folder dataset) or --flowers102-manual-dir, not both")
    if args.root:
        if not args.name:
            raise UsageError("--name is needed with --root")
        builder = tfds_data.build_folder_dataset(args.root, args.data_dir, args.name, args.size,
                                                 overwrite=args.overwrite)
    else:
        builder = tfds_data.build_flowers102(args.flowers102_manual_dir, args.data_dir, args.size,
                                             name=args.name or "oxford_flowers102_raw", overwrite=args.overwrite)
    info = builder.info
    counts = {k: v.num_examples for k, v in info.splits.items()}
    meta = info.metadata or {}
    skipped = meta.get("num_skipped", 0)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(meta.get("skipped_by_kind", {}).items()))
    conv = ", ".join(f"{n} {k}" for k, n in sorted(meta.get("conversions", {}).items()))
    print(f"built {info.name} ({args.size} px) in {args.data_dir}: {counts}, {skipped} unreadable files skipped"
          f"{f' ({kinds})' if kinds else ''}, {sum(meta.get('conversions', {}).values())} converted"
          f"{f' ({conv})' if conv else ''}; "
          f"train on it with --config.data.name=tfds --config.data.data_dir={args.data_dir} "
          f"--config.data.tfds_name={info.name}")
    return 0


def cmd_make_synthetic(args) -> int:
    from sage_jax.config import apply_overrides, load_config
    from sage_jax.data.loader import synthetic_spec
    from sage_jax.data.synthetic import write_folder

    cfg = load_config(args.config)
    try:
        apply_overrides(cfg, args.overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if cfg.data.name != "synthetic":
        raise UsageError(f"{args.config} has data.name={cfg.data.name!r}; make-synthetic needs the synthetic data")
    if os.path.exists(args.out) and os.listdir(args.out):
        raise UsageError(f"{args.out} exists and is not empty")
    paths = write_folder(synthetic_spec(cfg.data), args.out, args.split)
    print(f"wrote {len(paths)} {args.split} images of the synthetic dataset ({cfg.data.size} px) to {args.out}, "
          f"with their factor labels in {os.path.join(args.out, 'factors.npz')}")
    return 0


def cmd_make_glyphs(args) -> int:
    from sage_jax.data import glyphs

    out = args.out
    if os.path.isfile(out):
        raise UsageError(f"--out {out} is a file; give a folder (it is made if missing)")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, "labels.json")):
            raise UsageError(f"{out} is not empty and holds no glyph dataset (labels.json); give an empty or new folder")
        if not args.overwrite:
            raise UsageError(f"{out} holds a glyph dataset; pass --overwrite to rebuild it")
    if not 0.0 < args.held_out < 1.0:
        raise UsageError(f"--held-out is the share of faces held out, between 0 and 1 (not {args.held_out})")
    if args.processes < 1:
        raise UsageError("--processes must be at least 1")
    try:
        report = glyphs.build_glyph_dataset(out, args.fonts or None, size=args.size, seed=args.seed,
                                            held_out=args.held_out, processes=args.processes,
                                            progress=not args.quiet)
    except glyphs.GlyphFontsError as e:
        hint = ("install the fonts with scripts/install_fonts.sh (Debian/Ubuntu, the packages of "
                "scripts/font_packages.txt) or give folders of .ttf/.otf files with --fonts DIR")
        raise UsageError(f"{e}; {hint}") from None
    print(describe_glyph_report(report, out))
    if args.tfds:
        from sage_jax.data.glyph_data import GlyphDataError, build_glyph_tfds

        try:
            builder = build_glyph_tfds(out, args.tfds, args.tfds_name, overwrite=args.overwrite,
                                       progress=not args.quiet)
        except GlyphDataError as e:
            raise UsageError(str(e)) from None
        n = {k: v.num_examples for k, v in builder.info.splits.items()}
        print(f"TFDS dataset {builder.name} {builder.info.version} in {args.tfds}: {n} records; read it with "
              f"--config glyphs --config.data.data_dir={args.tfds}"
              + (f" --config.data.tfds_name={args.tfds_name}" if args.tfds_name != "glyphs" else ""))
    return 0


def _n(k: int, one: str, many: str | None = None) -> str:
    return f"{k} {one if k == 1 else many or one + 's'}"


def describe_glyph_report(report: dict, out: str) -> str:
    """What ``make-glyphs`` says: where, the faces, families, classes and images per
    split, what each filter dropped."""
    c = report["counts"]
    faces = {s: c[f"{s}_faces"] for s in ("train", "heldout")}
    lines = [f"wrote the glyph dataset ({report['size']} px, seed {report['seed']}, held out "
             f"{report['held_out']:g} of the faces) to {out}: {c['train_faces'] + c['heldout_faces']} faces of "
             f"{_n(c['families'], 'family', 'families')} in {_n(c['split_groups'], 'split group')}; {c['classes']} classes "
             f"({c['seen_classes']} seen, {c['unseen_classes']} unseen); {c['images']} images"]
    for s, name in (("train", "train"), ("heldout", "held-out")):
        lines.append(f"  {name}: {_n(faces[s], 'face')}, {_n(c[f'{s}_families'], 'family', 'families')}, "
                     f"{_n(c[f'{s}_groups'], 'split group')}; {faces[s] * c['classes']} images ({faces[s] * c['seen_classes']} "
                     f"of seen classes, {faces[s] * c['unseen_classes']} of unseen)")
    dropped = report["filtered"]
    steps = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in dropped.items() if v)
    lines.append(f"  filtered from {c['faces_found']} faces in {c['font_files']} font files: {steps or 'nothing'} "
                 f"(each face and why in report.json)")
    if report["size"] == 32:
        lines.append(f"  train on it: sage-jax train --config glyphs --config.data.root={out}")
    else:   # configs/glyphs.py has the tiny 32 px networks
        lines.append(f"  train on it with a config of {report['size']} px networks and --config.data.name=glyphs "
                     f"--config.data.root={out} --config.data.size={report['size']} (configs/glyphs.py is 32 px)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("build-dataset", help="build a TFDS dataset (array_record, no TensorFlow) from a "
                                             "folder or from the Oxford Flowers 102 manual download")
    s.add_argument("--root", default=None, help="folder dataset: <class>/<image> (train/valid sub-folders become splits)")
    s.add_argument("--flowers102-manual-dir", dest="flowers102_manual_dir", default=None,
                   help="folder with 102flowers.tgz, imagelabels.mat and setid.mat")
    s.add_argument("--data-dir", dest="data_dir", required=True, help="where to write the TFDS dataset")
    s.add_argument("--name", default=None, help="dataset name (default for flowers: oxford_flowers102_raw)")
    s.add_argument("--size", type=int, required=True, help="images are resized to size x size")
    s.add_argument("--overwrite", action="store_true", help="rebuild even if a different build exists")
    s.set_defaults(func=cmd_build_dataset)

    s = sub.add_parser("make-synthetic", help="write the synthetic dataset's seen or unseen classes as an image "
                                              "folder (with factors.npz, the ground-truth labels)")
    s.add_argument("--config", default="tiny",
                   help="a config whose data section is the synthetic dataset: the shipped tiny (the default) or "
                        "a config file's path")
    s.add_argument("--split", default="unseen", choices=["seen", "unseen", "all"], help="which classes (default unseen)")
    s.add_argument("--out", required=True, help="folder to write: OUT/<class>/<i>.png and OUT/factors.npz")
    s.set_defaults(func=cmd_make_synthetic)

    s = sub.add_parser("make-glyphs", help="render the font-glyph dataset (62 Latin classes seen, 78 Greek and "
                                           "Cyrillic unseen; faces split by typeface) from installed fonts")
    s.add_argument("--out", required=True, help="folder to write: OUT/{train,heldout}/<class>/<face>.png, "
                                                "labels.csv, labels.json, report.json")
    s.add_argument("--size", type=int, default=32, choices=[32, 64], help="image size in pixels (default 32; the "
                   "faces and the split are chosen at 32 px at either size)")
    s.add_argument("--fonts", nargs="+", default=None, metavar="DIR",
                   help="folders (or files) of .ttf/.otf/.ttc fonts (default: /usr/share/fonts and "
                        "/usr/local/share/fonts; scripts/install_fonts.sh installs the measured set)")
    s.add_argument("--held-out", dest="held_out", type=float, default=0.2,
                   help="share of the faces held out, whole typefaces at a time (default 0.2)")
    s.add_argument("--seed", type=int, default=0, help="seed of the typeface split (default 0)")
    s.add_argument("--processes", type=int, default=2, help="rendering processes (default 2)")
    s.add_argument("--overwrite", action="store_true", help="rebuild a glyph dataset already in --out (and --tfds)")
    s.add_argument("--tfds", default=None, metavar="DATA_DIR",
                   help="also build the TFDS dataset (array_record) from the folder into DATA_DIR/glyphs/1.0.0")
    s.add_argument("--tfds-name", dest="tfds_name", default="glyphs", help="its TFDS name (default glyphs)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_make_glyphs)
