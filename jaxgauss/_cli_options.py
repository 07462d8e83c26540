"""The command line's method hyperparameter options, generated from the registry:
one place for ``fit`` and ``sweep``."""

from __future__ import annotations

import argparse

from jaxgauss.methods import METHODS

__all__ = ["add_hyperparameter_options", "given_hyperparameters"]


def given_hyperparameters(args: argparse.Namespace) -> dict:
    """The hyperparameters given on the command line, by name (None: not given)."""
    return {
        h.name: getattr(args, h.name)
        for m in METHODS.values()
        for h in m.hyperparameters
        if hasattr(args, h.name)
    }


def add_hyperparameter_options(parser: argparse.ArgumentParser, skip: tuple = ()) -> None:
    """One option per hyperparameter named in the registry (but those named in
    ``skip``), its help saying which methods take it and what it means for each."""
    group = parser.add_argument_group("method hyperparameters (generated from the registry)")
    records: dict[str, list] = {}
    for method in METHODS.values():
        for h in (h for h in method.hyperparameters if h.name not in skip):
            records.setdefault(h.name, []).append((method.name, h))
    for name, uses in records.items():
        first = uses[0][1]
        meaning = "; ".join(
            f"{', '.join(m for m, x in uses if x.help == h.help)}: {h.help}"
            for h in {x.help: x for _, x in uses}.values()
        )
        flags = (first.flag, *sorted({a for _, h in uses for a in h.aliases}))
        group.add_argument(*flags, dest=name, default=None, help=meaning, **_kind(first))


def _kind(h) -> dict:
    """argparse's type, choices or action for a hyperparameter's kind."""
    if h.boolean:
        return {"action": argparse.BooleanOptionalAction}
    if h.choices:
        return {"choices": h.choices}
    if h.auto:
        return {"type": _number_or_auto, "metavar": "NUMBER|auto"}
    return {"type": int if h.integer else float}


def _number_or_auto(text: str):
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None
