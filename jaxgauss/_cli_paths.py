"""What the ``jaxgauss`` command refuses before it reads or writes anything: a missing
input, an empty output name, a file where an output folder belongs, and an output that
would overwrite an input (also through links) or another output."""

from __future__ import annotations

import argparse
import os

__all__ = ["check_out_name", "check_folder", "check_inputs_exist", "check_outputs"]


def check_out_name(value: str | None) -> None:
    if value is not None and not value.strip():
        raise ValueError("--out must name a file or folder, got an empty string")


def check_folder(out: str) -> None:
    """An output folder may exist, but not as a file."""
    check_out_name(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} is a file, not a folder: choose another name")


def check_inputs_exist(files: list[str]) -> None:
    """Every input file but stdin ("-") exists."""
    for path in files:
        if path != "-" and not os.path.exists(path):
            raise FileNotFoundError(f"no such file: {path}")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.abspath(a) == os.path.abspath(b)


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before reading anything, an output that would overwrite an input
    (also through links) or another output."""
    from jaxgauss.checkpoint import npz_path

    check_out_name(args.out)
    if args.checkpoint is not None and not args.checkpoint.strip():
        raise ValueError("--checkpoint must name a file, got an empty string")
    inputs = [("FILE", f) for f in args.file if f != "-"] + [("--resume", args.resume)]
    outputs = {"--out": args.out}
    if args.checkpoint:
        outputs["--checkpoint"] = str(npz_path(args.checkpoint))
    for out_name, out in outputs.items():
        for in_name, src in inputs:
            if out and src and _same_file(out, src):
                if (out_name, in_name) == ("--checkpoint", "--resume"):
                    continue  # replacing the checkpoint resumed from is the point
                raise ValueError(
                    f"{out_name} {out} is the same file as {in_name} {src}: refusing to overwrite it"
                )
    if args.out and args.checkpoint and _same_file(args.out, outputs["--checkpoint"]):
        raise ValueError(f"--out and --checkpoint name the same file {args.out}")
