"""What the method commands (``sample``, ``invert``, ``embed``, ``train-dictionary``,
``generate``) share: where the model is (``--model``: a shipped model's name such as
``tiny``, or a model directory; ``--checkpoint``: a ``.pt`` file or a directory), the
refinement flags and the inversion setting they make (printed, with where it came
from), and the dictionary."""

from __future__ import annotations

import os

import numpy as np

from sage_jax.errors import UsageError

MODEL_DIR_HINT = "a model directory from 'sage-jax train' (psp/, dictionary/, class_stats.npz, config.json)"
MODEL_HELP = ("'tiny' (the model shipped with sage-jax) or a model directory from 'sage-jax train' (WORKDIR/model), "
              "from any folder")


# ----------------------------------------------------------------------------- where the model is
def model_dir(path) -> str | None:
    """``path`` when it is a model directory written by ``sage-jax train`` (or the
    shipped one): it holds ``psp/psp.json``; else None."""
    return path if path and os.path.isfile(os.path.join(path, "psp", "psp.json")) else None


def resolve(value: str | None, flag: str, accepted: str = "a model directory from 'sage-jax train' (WORKDIR/model)"):
    """``value`` of ``flag`` as a path: a shipped model's name (``tiny``) becomes its
    directory; a path that does not exist and is not a name is refused naming what is
    accepted."""
    if value is None:
        return None
    from sage_jax.assets import model_path

    try:
        return model_path(value, flag, accepted)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def model_arg(args, flag: str = "--model") -> str | None:
    """The model directory of ``--model`` (resolved by ``sage-jax``'s ``main``), checked."""
    model = getattr(args, "model", None)
    if model is None:
        return None
    model = resolve(model, flag)
    if not model_dir(model):
        raise UsageError(f"{flag} {args.model} is not {MODEL_DIR_HINT}")
    return model


def enclosing_model(path) -> str | None:
    """The model directory ``path`` is, or is inside of (its ``psp/``, ``psp/decoder``)."""
    p = os.path.abspath(path) if path and os.path.isdir(path) else None
    for _ in range(3):
        if p is None:
            return None
        if model_dir(p):
            return p
        p = os.path.dirname(p)
    return None


def psp_path(path) -> str:
    """A pSp/AGE/SAGE source for ``load_psp``: a ``.pt`` file, a pSp directory
    (``psp.json``), or the ``psp/`` of a model directory."""
    if not os.path.exists(path):
        raise UsageError(f"checkpoint {path} does not exist")
    if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "psp.json")):
        return path
    if model_dir(path):
        return os.path.join(path, "psp")
    raise UsageError(f"{path} is neither a pSp directory (with psp.json, as 'sage-jax train-encoder' writes "
                     f"WORKDIR/psp) nor {MODEL_DIR_HINT}")


def encoder_source(args) -> tuple[str, str | None]:
    """(the pSp/AGE/SAGE source, the model directory or None) of ``--model`` /
    ``--checkpoint`` (``--checkpoint`` wins for the networks when both are given)."""
    model = model_arg(args)
    checkpoint = resolve(args.checkpoint, "--checkpoint",
                         "a pSp/AGE/SAGE .pt file, a pSp directory or a model directory from 'sage-jax train'")
    if checkpoint is None and model is None:
        raise UsageError(f"give --model tiny (the model shipped with sage-jax) or --model DIR ({MODEL_DIR_HINT}), "
                         "or --checkpoint FILE|DIR (a pSp/AGE/SAGE .pt file or directory)")
    return (checkpoint or model), model


def load_psp(path):
    """The pSp model of ``path`` (see :func:`psp_path`), with an encoder."""
    from sage_jax import checkpoints

    psp = checkpoints.load_psp(psp_path(path))
    if psp.encoder is None:
        raise UsageError(f"{path} has no encoder")
    return psp


def load_dictionary(psp_path_, dictionary_path, required=True):
    """The dictionary from --dictionary, else the model directory's, else the
    checkpoint's ax.* (if complete)."""
    from sage_jax import checkpoints

    if dictionary_path:
        if not os.path.exists(dictionary_path):
            raise UsageError(f"dictionary {dictionary_path} does not exist")
        return checkpoints.load_dictionary(dictionary_path)
    if model_dir(psp_path_) and os.path.isdir(os.path.join(psp_path_, "dictionary")):
        return checkpoints.load_dictionary(os.path.join(psp_path_, "dictionary"))
    src = psp_path_
    if os.path.isdir(psp_path_):
        ax_file = os.path.join(psp_path_, "ax.npz")
        src = dict(np.load(ax_file)) if os.path.exists(ax_file) else {}
    try:
        return checkpoints.load_dictionary(src)
    except checkpoints.CheckpointError as e:
        if required:
            raise UsageError(f"{psp_path_} has no usable dictionary ({e}); pass --dictionary "
                             "(e.g. WORKDIR/dictionary from 'sage-jax train-dictionary')") from None
        return None


# ----------------------------------------------------------------------------- refinement
def add_refine_args(s, default: str) -> None:
    g = s.add_argument_group("refinement by optimisation (none of pSp, AGE, SAGE offers it)")
    g.add_argument("--refine-steps", dest="refine_steps", type=int, default=None,
                   help="Adam steps optimising each image's W+ code from the encoder's on reconstruction loss "
                        f"(MSE, + LPIPS with --lpips); 0: the encoder's codes ({default})")
    g.add_argument("--refine-lr", dest="refine_lr", type=float, default=None,
                   help="the refinement's Adam learning rate (default 0.02, or the model's)")
    g.add_argument("--lpips", default=None, help="LPIPS(net='vgg') weights for the refinement loss")
    g.add_argument("--lpips-vgg", dest="lpips_vgg", default=None, help="or torchvision vgg16-397923af.pth ...")
    g.add_argument("--lpips-heads", dest="lpips_heads", default=None, help="... with lpips/weights/v0.1/vgg.pth")


def check_refine_args(args) -> None:
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


def _flags_given(args) -> bool:
    return args.refine_steps is not None or args.refine_lr is not None or bool(args.lpips or args.lpips_vgg)


def inverter(args, psp, default=None, *, required=None, what: str = "the class statistics", model=None,
             other=None):
    """The Inverter of --refine-steps / --refine-lr / --lpips*: what the flags give, the
    rest from ``default`` (the model's setting), else from ``required`` (a setting that
    must be kept: the statistics' for generate and train-dictionary, refused otherwise),
    else the encoder's codes. Prints which setting is used and where it came from
    (``model``: the model directory ``default`` is of; ``other``: a model's setting not
    used, mentioned)."""
    from sage_jax.inversion import InversionSetting, Inverter

    base = required or default or InversionSetting()
    lpips_given = bool(args.lpips or args.lpips_vgg)
    steps = base.refine_steps if args.refine_steps is None else args.refine_steps
    lr = base.refine_lr if args.refine_lr is None else args.refine_lr
    use_lpips = lpips_given or (args.refine_steps is None and base.lpips)
    if lpips_given and steps == 0:
        raise UsageError("--lpips weights are for the refinement: give --refine-steps N (N > 0)")
    setting = InversionSetting(steps, lr, use_lpips)
    if required is not None and setting != required:
        from sage_jax.inversion import check_setting

        try:
            check_setting(required, setting, what=what)
        except ValueError as e:
            raise UsageError(str(e)) from None
    lpips = None
    if lpips_given:
        from sage_jax.checkpoints.lpips import load_lpips, load_lpips_from_parts

        lpips = load_lpips(args.lpips) if args.lpips else load_lpips_from_parts(args.lpips_vgg, args.lpips_heads)
    try:
        inv = Inverter(psp, setting, lpips)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print("inversion: " + setting.describe() + " (" + _origin(args, setting, default, required, what, other) + ")")
    return inv


def _origin(args, setting, default, required, what, other) -> str:
    """Where the inversion setting came from, and how to change it."""
    if required is not None:
        return f"the setting {what} were made with; codes compared with them must be made the same way"
    if _flags_given(args):
        return "as the flags ask" + (f"; the model's setting is {default.describe()}"
                                     if default is not None and default != setting else "")
    if default is not None:
        return "the model's setting; " + ("--refine-steps 0 for the encoder alone" if setting.refines
                                          else "--refine-steps N refines the codes")
    note = ""
    if other is not None and other.refines:
        note = (f"; this model's statistics were made with {other.describe()}: --model uses that setting, "
                f"or pass {other.flags()}")
    return "the default: --refine-steps N refines the codes" + note


def model_setting(model):
    """The model directory's inversion setting (as its class statistics were made), or None."""
    if model is None:
        return None
    from sage_jax.statistics import model_inversion

    return model_inversion(model)
