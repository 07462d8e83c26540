"""mkdocs hooks: what the site generates rather than copies.

- The benchmark reports of ``benchmarks/results/`` (Markdown and figures) become pages
  and files of the site under the same paths, so the docs link and show them as
  committed.
- ``cli.md``'s markers are replaced by the method table (from the registry,
  ``jaxgauss.methods.METHODS``) and every subcommand's usage and options (from the
  argparse parser, ``jaxgauss.cli._parser()``): the page cannot drift from the
  command. ``tests/test_docs.py`` checks that every option is rendered.
"""

from __future__ import annotations

import argparse
import html
import math
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
METHODS_MARKER = "<!-- generated: methods -->"
REFERENCE_MARKER = "<!-- generated: cli -->"


def _cell(text: str) -> str:
    """Plain text as one Markdown table cell."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return re.sub(r"([\\`*_|\[\]])", r"\\\1", text)


def _number(value) -> str:
    if value is None:
        return "required"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def methods_table() -> str:
    """The registry's methods, their hyperparameters and what a sweep varies."""
    from jaxgauss.methods import METHODS

    rows = [
        "| method | what it is | hyperparameters: `fit` flag (default) | `sweep` varies |",
        "| --- | --- | --- | --- |",
    ]
    for m in METHODS.values():
        hypers = []
        for h in m.hyperparameters:
            said = "default" in h.help  # the help names its own default
            default = "" if said else f" ({_cell(_number(h.default))})"
            hypers.append(f"`{h.flag}`{default}: {_cell(h.help)}")
        if m.uses_parameterization:
            hypers.append("`--parameterization` (cholesky)")
        swept = next((h.flag for h in m.hyperparameters if h.name == m.swept), "—")
        swept = f"`{swept}`" if swept != "—" else swept
        rows.append(f"| `{m.name}` | {_cell(m.summary)} | {'<br>'.join(hypers) or '—'} | {swept} |")
    return "\n".join(rows)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.option_strings:
        names = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs != 0:
            metavar = formatter._format_args(action, action.dest.upper())
            names += f" `{metavar}`" if not action.choices else ""
    else:
        names = f"`{formatter._format_args(action, action.dest)}`"
    meaning = _cell(formatter._expand_help(action)) if action.help else ""
    if action.choices and action.option_strings:
        meaning = (
            meaning.rstrip(".") + ". One of: " + ", ".join(f"`{c}`" for c in action.choices) + "."
        )
    return f"| {names} | {meaning} |"


def options(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """A subcommand's documented arguments (all but --help)."""
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]


def cli_reference() -> str:
    """Every subcommand: its description, usage and a table of its arguments."""
    from jaxgauss.cli import _parser

    parser = _parser()
    parts = []
    for name, sub in _subcommands(parser).items():
        formatter = sub._get_formatter()
        parts += [f"## `jaxgauss {name}`", ""]
        if sub.description:
            parts += [" ".join(sub.description.split()), ""]
        parts += ["```text", sub.format_usage().strip(), "```", ""]
        parts += ["| argument | meaning |", "| --- | --- |"]
        parts += [_option(a, formatter) for a in options(sub)]
        parts.append("")
    return "\n".join(parts)


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.iterdir()):
        if path.suffix in (".md", ".png"):
            uri = f"benchmarks/results/{path.name}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    if METHODS_MARKER in markdown:
        markdown = markdown.replace(METHODS_MARKER, methods_table())
    if REFERENCE_MARKER in markdown:
        markdown = markdown.replace(REFERENCE_MARKER, cli_reference())
    return markdown
