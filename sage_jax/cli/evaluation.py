"""``evaluate``: the paper's evaluation of generated image folders (and ``--classwise`` for
class-conditional generators)."""

from __future__ import annotations

import os


from sage_jax.errors import UsageError


# ----------------------------------------------------------------------------- evaluation
def _cmd_evaluate_classwise(args, metrics) -> int:
    """``evaluate --conditional ... --metrics classwise`` (sage_jax.metrics.classwise)."""
    from sage_jax.metrics.classwise import ClasswiseOptions, classwise_table, run_classwise

    if args.generated:
        raise UsageError("--conditional (classwise) and --generated are evaluated separately: give one of them")
    if set(metrics) - {"classwise"} and args.metrics != ",".join(("fid", "lpips", "nas", "fewshot")):
        raise UsageError("--conditional generators are evaluated with --metrics classwise only")
    o = ClasswiseOptions(n_per_class=args.per_class, fraction=args.group_fraction, oracles=args.oracles,
                         seed=args.seed, progress=not args.quiet)
    try:
        results = run_classwise(args.real, args.conditional, args.out, o)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(classwise_table(results))
    print(f"wrote {os.path.join(args.out, 'classwise.json')} and classwise.md ({results['seconds']:.0f} s)")
    return 0


def cmd_evaluate(args) -> int:
    """Several processes: all of them evaluate together (the classifiers train on every
    device of every process) and compute the same results; process 0 alone writes
    OUT/metrics.json, tables.md and samples.png, and shows progress
    (:func:`sage_jax.evaluation.run_evaluation`)."""
    from sage_jax import parallel
    from sage_jax.errors import EvaluationError
    from sage_jax.evaluation import EvalOptions, run_evaluation, tables

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.conditional:
        return _cmd_evaluate_classwise(args, metrics)
    if "classwise" in metrics:
        raise UsageError("--metrics classwise evaluates class-conditional generators: give --conditional LABEL=DIR")
    if not args.generated:
        raise UsageError("give --generated [LABEL=]DIR (or --conditional LABEL=DIR with --metrics classwise)")

    o = EvalOptions(
        metrics=metrics, size=args.size, glob=args.glob,
        setting=args.setting, dataset=args.dataset, inception=args.inception, lpips=args.lpips,
        lpips_vgg=args.lpips_vgg, lpips_heads=args.lpips_heads,
        lpips_protocol=args.lpips_protocol, oracles=args.oracles,
        cache_dir=args.cache_dir, nas_shots=args.nas_shots, nas_generated=args.nas_generated,
        nas_seeds=args.nas_seeds, nas_steps=args.nas_steps, sgia_alpha=args.sgia_alpha, bridging=args.bridging,
        classifier=args.classifier, flip=args.flip, classifier_size=args.classifier_size,
        pretrain_steps=args.pretrain_steps,
        fewshot_ways=args.ways, fewshot_shots=tuple(args.fewshot_shots), fewshot_queries=args.queries,
        fewshot_episodes=args.episodes, bootstrap=args.bootstrap, fid_bootstrap=args.fid_bootstrap,
        seed=args.seed, progress=not args.quiet and parallel.is_main())
    try:
        results = run_evaluation(args.real, args.generated, args.out, o, seen_root=args.seen, shots_root=args.shots)
    except EvaluationError as e:
        raise UsageError(str(e)) from None
    print(tables(results))
    for name, rep in results["images_read"].items():
        if rep["num_skipped"] or rep["converted"]:
            kinds = ", ".join(f"{n} {k}" for k, n in rep["skipped_by_kind"].items())
            print(f"{name}: {rep['num_skipped']} image(s) skipped" + (f" ({kinds})" if kinds else "")
                  + f"; {sum(rep['converted'].values())} converted")
    print(f"wrote {os.path.join(args.out, 'metrics.json')}, tables.md and samples.png "
          f"({results['seconds']:.0f} s)")
    return 0


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("evaluate", help="the paper's evaluation (FID, KID, LPIPS diversity, NAS with SGIA options, "
                                        "few-shot classification, ground truth) of generated image folders",
                       description="Evaluates one or more folders of generated images (one sub-folder per "
                                   "unseen class) against real images of those classes; writes OUT/metrics.json, "
                                   "OUT/tables.md (the layout of the paper's Tables 1, 2 and 4) and "
                                   "OUT/samples.png.")
    s.add_argument("--real", required=True, help="real images of the unseen classes: <class>/<image>")
    s.add_argument("--generated", action="append", metavar="[LABEL=]DIR",
                   help="generated images: <class>/<image>; repeat for several methods")
    s.add_argument("--conditional", action="append", metavar="[LABEL=]DIR",
                   help="instead of --generated: a class-conditional generator (model dir from train-gan with "
                        "gan.conditional) for --metrics classwise, per-class-group FID and category retention "
                        "(head / tail by training count) against --real seen-class images; repeat to compare")
    s.add_argument("--per-class", dest="per_class", type=int, default=100,
                   help="classwise: images generated per class (default 100)")
    s.add_argument("--group-fraction", dest="group_fraction", type=float, default=1.0 / 3.0,
                   help="classwise: share of classes in the head and in the tail group (default 1/3)")
    s.add_argument("--metrics", default=",".join(("fid", "lpips", "nas", "fewshot")),
                   help="comma-separated: fid, kid, lpips, nas, fewshot, gt (default fid,lpips,nas,fewshot); "
                        "classwise with --conditional")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seen", default=None, help="real images of the seen classes (needed by nas and fewshot)")
    s.add_argument("--shots", default=None,
                   help="S_sample: the images the generated sets were made from, <class>/<image> (default: the "
                        "first --nas-shots sorted images of each --real class; the rest are the NAS test set)")
    s.add_argument("--glob", default=None,
                   help="file pattern of generated images (default: <mode>_[0-9]*.png when the folder has a "
                        "generation.json from 'sage-jax generate', else *)")
    s.add_argument("--setting", default=None, help="setting shown in Table 1, e.g. 1-shot (default: generation.json)")
    s.add_argument("--dataset", default=None, help="dataset name in the tables (default: the --real folder's name)")
    s.add_argument("--size", type=int, default=None, help="read all images at this size (default: the real images')")
    s.add_argument("--inception", default=None, help="pt_inception-2015-12-05-6726825d.pth, pytorch-fid's weights")
    s.add_argument("--cache-dir", dest="cache_dir", default=None,
                   help="cache of real-set feature statistics (default ~/.cache/sage-jax/fid_stats)")
    s.add_argument("--kid-subsets", dest="kid_subsets", type=int, default=100)
    s.add_argument("--lpips", default=None, help="LPIPS(net='vgg') state dict of the lpips package")
    s.add_argument("--lpips-vgg", dest="lpips_vgg", default=None, help="or torchvision vgg16-397923af.pth ...")
    s.add_argument("--lpips-heads", dest="lpips_heads", default=None, help="... with lpips/weights/v0.1/vgg.pth")
    s.add_argument("--lpips-protocol", dest="lpips_protocol", default="official", choices=["official", "clean", "full"],
                   help="LPIPS diversity: 'official' (default) is the paper's script exactly (cv2 resize to 32x32 on "
                        "uint8, the network fed u/63.75-3); 'clean' resizes with antialiasing and feeds [-1, 1] (not the "
                        "paper's); 'full' keeps the resolution")
    s.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap replicates of the 95%% intervals of retention, diversity, LPIPS and NAS "
                        "(over classes and their images; default 1000)")
    s.add_argument("--fid-bootstrap", dest="fid_bootstrap", type=int, default=200,
                   help="bootstrap replicates of the FID and KID intervals (each one a matrix square root; "
                        "default 200; 0: no FID/KID intervals)")
    s.add_argument("--oracles", default=None,
                   help="ground-truth oracles for the synthetic data (default: the shipped tiny model's)")
    s.add_argument("--nas-shots", dest="nas_shots", type=int, default=10, help="real shots per class (default 10)")
    s.add_argument("--nas-generated", dest="nas_generated", type=int, default=100,
                   help="generated images per class added for NAS (default 100)")
    s.add_argument("--nas-seeds", dest="nas_seeds", type=int, default=3, help="fine-tuning seeds (default 3)")
    s.add_argument("--nas-steps", dest="nas_steps", type=int, default=None, help="fine-tuning steps")
    s.add_argument("--sgia-alpha", dest="sgia_alpha", type=float, default=None,
                   help="also run SGIA's balanced sampler: each slot is generated with probability alpha")
    s.add_argument("--bridging", action="store_true",
                   help="also run SGIA's bridging fine-tuning (the balanced mix, then real images only)")
    s.add_argument("--classifier", default="vit", choices=["vit", "resnet"], help="NAS classifier (default vit)")
    s.add_argument("--flip", action="store_true",
                   help="horizontal flips when training the classifiers (natural images; off by default because a "
                        "flip turns some synthetic classes into others)")
    s.add_argument("--classifier-size", dest="classifier_size", type=int, default=64,
                   help="classifier input size (default 64; the real images' size if smaller)")
    s.add_argument("--pretrain-steps", dest="pretrain_steps", type=int, default=None,
                   help="pre-training steps on the seen classes")
    s.add_argument("--ways", type=int, default=5, help="few-shot: classes per episode (default 5)")
    s.add_argument("--fewshot-shots", dest="fewshot_shots", type=int, nargs="+", default=[1, 5],
                   help="few-shot: shots per class (default 1 5)")
    s.add_argument("--queries", type=int, default=15, help="few-shot: queries per class (default 15)")
    s.add_argument("--episodes", type=int, default=600, help="few-shot: episodes (default 600)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_evaluate)
