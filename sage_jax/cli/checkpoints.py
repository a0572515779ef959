"""``inspect`` and ``convert``: what a PyTorch checkpoint holds, and a generator or
discriminator converted to a sage-jax model directory."""

from __future__ import annotations

import json
import os

import numpy as np

from sage_jax.errors import UsageError


# ----------------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from sage_jax import checkpoints

    obj = checkpoints.read_torch(args.file)
    lines: list[str] = []

    def walk(o, indent: int, depth: int):
        pad = "  " * indent
        items = o.items() if isinstance(o, dict) else enumerate(o)
        for n, (k, v) in enumerate(items):
            if n >= args.max_items:
                lines.append(f"{pad}... ({len(o) - n} more)")
                break
            if isinstance(v, np.ndarray):
                lines.append(f"{pad}{k}: {v.dtype} {list(v.shape)}")
            elif isinstance(v, (dict, list, tuple)) and depth < args.depth:
                lines.append(f"{pad}{k}: ({type(v).__name__}, {len(v)} entries)")
                walk(v, indent + 1, depth + 1)
            else:
                lines.append(f"{pad}{k}: {str(v)[:120]}")

    if isinstance(obj, (dict, list, tuple)):
        walk(obj, 0, 0)
    else:
        lines.append(repr(obj)[:500])
    print("\n".join(lines))
    if isinstance(obj, dict):
        for name in ("g_ema", "g"):
            if isinstance(obj.get(name), dict):
                cfg = checkpoints.generator_config_from_state_dict(obj[name])
                print(f"\n{name}: StyleGAN2 generator {json.dumps(cfg)}")
        if isinstance(obj.get("state_dict"), dict):
            parts = checkpoints.split_state_dict(obj["state_dict"])
            print("\nstate_dict parts: " + ", ".join(f"{k} ({len(v)} tensors)" for k, v in parts.items()))
    return 0


# ----------------------------------------------------------------------------- convert
def cmd_convert(args) -> int:
    from sage_jax import checkpoints

    ckpt = checkpoints.read_torch(args.checkpoint)
    which = args.which
    if which in ("d",):
        if not isinstance(ckpt.get("d"), dict):
            raise UsageError(f"{args.checkpoint} has no 'd' entry")
        model = checkpoints.load_discriminator(ckpt["d"])
    elif which in ("g_ema", "g"):
        if not isinstance(ckpt.get(which), dict):
            raise UsageError(f"{args.checkpoint} has no {which!r} entry (it has {sorted(ckpt)})")
        model = checkpoints.load_generator(ckpt[which])
    elif which == "decoder":
        model = checkpoints.load_generator(ckpt.get("state_dict", ckpt), prefix="decoder.")
    else:  # auto
        model = checkpoints.load_generator(ckpt)
    checkpoints.save_model(args.out, model, overwrite=args.overwrite,
                           extra={"source": os.path.abspath(args.checkpoint), "which": which})
    print(f"wrote {model!r} to {args.out}")
    return 0


# ----------------------------------------------------------------------------- arguments
def register(sub) -> None:
    """Adds this module's subcommands to ``sub`` (the ``sage-jax`` subparsers)."""
    s = sub.add_parser("inspect", help="show what a .pt checkpoint holds (read without torch)")
    s.add_argument("file", help="a .pt/.pth file written by torch.save")
    s.add_argument("--depth", type=int, default=2, help="how deep to list nested entries (default 2)")
    s.add_argument("--max-items", type=int, default=40, help="entries listed per container (default 40)")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("convert", help="convert a StyleGAN2 from a .pt checkpoint to a sage-jax model directory")
    s.add_argument("--checkpoint", required=True, help="rosinality, pSp, AGE or SAGE .pt file")
    s.add_argument("--out", required=True, help="model directory to write")
    s.add_argument("--which", default="auto", choices=["auto", "g_ema", "g", "d", "decoder"],
                   help="which network: auto (g_ema, else the decoder of a pSp/AGE/SAGE file), "
                        "g_ema, g, d (discriminator) or decoder")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_convert)
