"""``train-dictionary``: the attribute dictionary learnt on the seen classes' codes,
the generator and encoder frozen, and the class statistics' back-projected codes."""

from __future__ import annotations

import os

from sage_jax.cli.common import add_refine_args, check_refine_args, encoder_source, load_psp
from sage_jax.cli.common import inverter as make_inverter
from sage_jax.errors import UsageError


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
    check_refine_args(args)
    args.model = None
    source, _ = encoder_source(args)
    psp = load_psp(source)
    layers = [int(i) for g in cfg.groups for i in g]
    if not layers or min(layers) < 0 or max(layers) >= psp.encoder.n_styles:
        raise UsageError(f"dictionary groups {[list(g) for g in cfg.groups]} must use layers 0..{psp.encoder.n_styles - 1} "
                         f"(the encoder of {args.checkpoint} has {psp.encoder.n_styles} styles)")
    try:
        stats = ClassStatistics.load(args.stats)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if stats.encoder_fingerprint != fingerprint(psp.encoder.variables):
        raise UsageError(f"{args.stats} was made with a different encoder than {args.checkpoint}")
    inverter = make_inverter(args, psp, required=stats.inversion, what=f"the class statistics {args.stats}")
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



# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("train-dictionary", help="learn the attribute dictionary (generator and encoder frozen)")
    s.add_argument("--checkpoint", required=True,
                   help="pSp/AGE/SAGE .pt file or model directory ('tiny': the model shipped with sage-jax)")
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
    add_refine_args(s, "default: the setting --stats was made with; another is refused")
    s.set_defaults(func=cmd_train_dictionary)

