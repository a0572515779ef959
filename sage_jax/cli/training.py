"""``train`` (the whole pipeline, stage by stage), ``train-gan`` and ``train-encoder``."""

from __future__ import annotations

import os


from sage_jax.errors import UsageError


# ----------------------------------------------------------------------------- training
def _training_config(args, section):
    from sage_jax.config import apply_overrides, load_config

    cfg = load_config(args.config)
    if section not in cfg:
        raise UsageError(f"{args.config} has no '{section}' section")
    try:
        apply_overrides(cfg, args.overrides, aliases={"train": section})
        _check_training_config(cfg, (section,))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg


def _check_training_config(cfg, sections):
    """Impossible values are refused here, before any data is read or file written."""
    from sage_jax.config import check_generator, check_section

    for name in sections:
        if name in cfg:
            check_section(cfg[name], name)
    if "model" in cfg and "generator" in cfg.model:
        check_generator(cfg.model.generator)


def _images_note(ds) -> str:
    report = getattr(ds, "report", None)
    return f"; {report.summary()}" if report is not None else ""


def _write_config(cfg, workdir):
    """``WORKDIR/config.json`` (process 0 of a multi-process run)."""
    from sage_jax import parallel

    if parallel.is_main():
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(cfg.to_json_best_effort(indent=1))
    parallel.barrier("config-written")


def cmd_train_gan(args) -> int:
    from sage_jax.data.loader import seen_dataset
    from sage_jax.train.gan import train_gan

    cfg = _training_config(args, "gan")
    ds = seen_dataset(cfg.data, cfg.model.generator.size)
    print(f"training StyleGAN2 ({cfg.model.generator.size} px) on {len(ds)} images of "
          f"{ds.num_classes} seen classes in {args.workdir}")
    _write_config(cfg, args.workdir)
    G, _ = train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, ds, args.workdir, quiet=args.quiet,
                     hflip=bool(cfg.data.get("hflip", False)))
    print(f"generator (EMA) in {os.path.join(args.workdir, 'g_ema')}, samples in "
          f"{os.path.join(args.workdir, 'samples')}" + _images_note(ds))
    return 0


def cmd_train_encoder(args) -> int:
    from sage_jax import checkpoints
    from sage_jax.data.loader import seen_dataset
    from sage_jax.train.encoder import train_encoder

    cfg = _training_config(args, "psp")
    if not os.path.exists(args.generator):
        raise UsageError(f"generator {args.generator} does not exist")
    G = checkpoints.load_generator(args.generator)
    enc = cfg.model.encoder
    if enc.style_dim != G.style_dim or enc.n_styles < G.n_latent:
        raise UsageError(f"the encoder of the config (model.encoder.style_dim={enc.style_dim}, n_styles={enc.n_styles}) "
                         f"cannot drive {args.generator}: a {G.size} px generator with style_dim {G.style_dim} "
                         f"needs style_dim {G.style_dim} and n_styles >= {G.n_latent}")
    lpips = None
    if args.lpips or args.lpips_vgg or args.lpips_heads:
        from sage_jax.checkpoints.lpips import load_lpips, load_lpips_from_parts

        if args.lpips:
            lpips = load_lpips(args.lpips)
        elif args.lpips_vgg and args.lpips_heads:
            lpips = load_lpips_from_parts(args.lpips_vgg, args.lpips_heads)
        else:
            raise UsageError("give --lpips, or both --lpips-vgg and --lpips-heads")
    ds = seen_dataset(cfg.data, cfg.model.encoder.input_size)
    passes = int(cfg.psp.get("restyle_iterations", 0))
    kind = f"an iterative (ReStyle) encoder, {passes} passes," if passes else "the pSp encoder"
    print(f"training {kind} for a {G.size} px generator on {len(ds)} images in {args.workdir}"
          + (" with LPIPS" if lpips else " (no LPIPS weights given: L2 and w-norm only)"))
    _write_config(cfg, args.workdir)
    train_encoder(cfg.model.encoder, G, cfg.psp, ds, args.workdir, quiet=args.quiet, lpips=lpips)
    print(f"pSp model (encoder, decoder, latent_avg) in {os.path.join(args.workdir, 'psp')}" + _images_note(ds))
    return 0


def cmd_train(args) -> int:
    from sage_jax.config import apply_overrides, load_config
    from sage_jax.pipeline import train_pipeline

    cfg = load_config(args.config)
    try:
        apply_overrides(cfg, args.overrides)
        _check_training_config(cfg, ("gan", "psp", "dictionary"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    train_pipeline(cfg, args.workdir, quiet=args.quiet)
    return 0


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("train", help="the whole pipeline: GAN, encoder, class statistics, dictionary "
                                      "(+ oracles on synthetic data), resumable stage by stage",
                       description="Trains every stage into WORKDIR and bundles WORKDIR/model. Any config value "
                                   "can be set with --config.SECTION.KEY=VALUE.")
    s.add_argument("--config", default="tiny",
                   help="a shipped config by name (tiny, glyphs, flowers, animal_faces, nabirds, vggfaces) or a path "
                        "(default: tiny)")
    s.add_argument("--workdir", required=True, help="stage directories and the final model; running again resumes")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_train)

    for name, helptext, func in (
            ("train-gan", "train a StyleGAN2 (sharded over all devices, resumable)", cmd_train_gan),
            ("train-encoder", "train a pSp encoder for a frozen generator (resumable)", cmd_train_encoder)):
        s = sub.add_parser(name, help=helptext,
                           description=helptext + ". Any config value can be set with --config.SECTION.KEY=VALUE; "
                                       "--config.train.KEY is this command's own section.")
        s.add_argument("--config", default="tiny",
                       help="a shipped config by name (tiny, glyphs, flowers, animal_faces, nabirds, vggfaces) or a path "
                            "(default: tiny)")
        s.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/, results; "
                                                         "running again resumes")
        if name == "train-encoder":
            s.add_argument("--generator", required=True, help="the frozen generator: model dir or .pt")
            s.add_argument("--lpips", default=None,
                           help="LPIPS weights for the perceptual term: a state dict of the lpips package's "
                                "LPIPS(net='vgg') saved with torch.save")
            s.add_argument("--lpips-vgg", dest="lpips_vgg", default=None,
                           help="or: torchvision vgg16 weights (vgg16-397923af.pth) ...")
            s.add_argument("--lpips-heads", dest="lpips_heads", default=None,
                           help="... with the lpips package's linear heads (lpips/weights/v0.1/vgg.pth)")
        s.add_argument("--quiet", action="store_true", help="no progress bar")
        s.set_defaults(func=func)
