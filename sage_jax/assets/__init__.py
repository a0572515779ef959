"""Files shipped inside the package: the tiny model ``sage-jax train --config
configs/tiny.py`` makes (``scripts/make_tiny_model.sh`` rebuilds it) and the glyph
model ``sage-jax train --config glyphs`` makes (``scripts/make_glyph_model.sh``).

Commands that take a model (``--model``, and ``--checkpoint`` where a model directory
is accepted) take the name of a shipped model as well as a path: :func:`model_path`
turns ``tiny`` into this directory, from any working directory."""

import os

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_model")

# the shipped models by name
GLYPH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glyph_model")
MODELS = {"tiny": ASSET_DIR, "glyphs": GLYPH_DIR}


def is_model_name(value) -> bool:
    return isinstance(value, str) and value in MODELS


def model_path(value: str, flag: str = "--model",
               accepted: str = "a model directory from 'sage-jax train' (WORKDIR/model)") -> str:
    """The directory ``value`` names: a shipped model's name (``tiny``), unless a
    directory of that name holding a model is in the working directory, or a path. A
    value that is neither an existing path nor a name is a :class:`FileNotFoundError`
    that says what is accepted."""
    if is_model_name(value) and not os.path.isfile(os.path.join(value, "psp", "psp.json")):
        return MODELS[value]
    if os.path.exists(value):
        return value
    import difflib

    close = difflib.get_close_matches(os.path.basename(os.path.normpath(value)), list(MODELS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    names = " or ".join(f"'{n}'" for n in MODELS)
    raise FileNotFoundError(f"{flag} {value} does not exist, and is not the name of a shipped model{hint}: give "
                            f"{names} (the models shipped with sage-jax) or the path of {accepted}")
