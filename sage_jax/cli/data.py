"""``build-dataset`` (a TFDS dataset from image folders) and ``make-synthetic`` (the
synthetic ground-truth dataset as image folders)."""

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
                   help="config whose data section defines the dataset: a shipped config by name (tiny, flowers, "
                        "animal_faces, nabirds, vggfaces) or a path (default tiny)")
    s.add_argument("--split", default="unseen", choices=["seen", "unseen", "all"], help="which classes (default unseen)")
    s.add_argument("--out", required=True, help="folder to write: OUT/<class>/<i>.png and OUT/factors.npz")
    s.set_defaults(func=cmd_make_synthetic)
