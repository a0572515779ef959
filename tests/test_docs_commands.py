"""Every ``sage-jax`` command the README and the guides in docs/ show parses: its
subcommand exists and takes every option written (the first check a reader's
copy-paste meets; the commands themselves are run by the other tests). The research
log (docs/research/) shows the commands of its time and is not checked."""

from __future__ import annotations

import glob
import os
import re
import shlex

import pytest

from fixture_utils import ROOT

DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def commands(path: str) -> list[str]:
    """The ``sage-jax ...`` command lines in the bash blocks of ``path`` (continuation
    lines joined, comments dropped)."""
    text = open(os.path.join(ROOT, path)).read()
    out = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            words = []
            for token in list(lexer) + [";"]:
                if token and set(token) <= set("&|;()<>"):   # an operator ends a command
                    if "sage-jax" in words:
                        out.append(words[words.index("sage-jax"):])
                    words = []
                else:
                    words.append(token)
    return out


@pytest.mark.parametrize("path", DOCS)
def test_every_command_in_the_docs_parses(path):
    from sage_jax.cli import _unknown_option, build_parser
    from sage_jax.config import split_overrides

    parser = build_parser()
    found, wrong = commands(path), []
    for words in found:
        argv = words[1:]
        if not argv or argv[0].startswith("-") or argv[0] in ("COMMAND", "<command>"):
            continue
        rest, _ = split_overrides(argv)
        if rest[0] == "launch" and "--" in rest:
            inner = rest[rest.index("--") + 1:]
            rest = rest[:rest.index("--")]
            found.append(["sage-jax", *inner])
        message = _unknown_option(parser, rest)
        try:
            parser.parse_args(rest)
        except SystemExit as e:
            message = message or f"exit {e.code}"
        if message:
            wrong.append(f"{' '.join(words)}  ->  {message}")
    assert not wrong, f"{path}: commands that do not parse:\n" + "\n".join(wrong)


def test_the_command_finder_sees_the_readme_commands():
    """The check above cannot pass by finding nothing."""
    found = [" ".join(w) for w in commands("README.md")]
    assert any(c.startswith("sage-jax demo") for c in found)
    assert any(c.startswith("sage-jax generate --model tiny") for c in found)
    assert sum(c.startswith("sage-jax train") for c in found) >= 2
