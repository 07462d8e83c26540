"""The ``jaxgauss`` command's "several processes" options (``fit`` and ``sweep``) and
joining JAX's distributed runtime from them."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_options", "initialize"]

# Defaults of jax.distributed.initialize's timeouts (seconds): long enough for every
# host of a cluster job to start and compile, short enough that a dead peer ends the
# others within minutes rather than hanging them in a collective.
_INIT_TIMEOUT = 300
_HEARTBEAT_TIMEOUT = 60


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options that join a command's processes (``fit``'s and ``sweep``'s)."""
    group = parser.add_argument_group(
        "several processes",
        "run on JAX's distributed runtime: every process runs the same command with its "
        "own --process-id (or the cluster launcher's environment sets them, as "
        "jax.distributed.initialize reads it: JAX_COORDINATOR_ADDRESS, SLURM, Open MPI)",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="initialise from the cluster launcher's environment (SLURM, Open MPI, ...)",
    )
    group.add_argument(
        "--init-timeout",
        type=int,
        default=_INIT_TIMEOUT,
        metavar="S",
        help="give up if the processes have not all joined within S seconds (default: %(default)s)",
    )
    group.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=_HEARTBEAT_TIMEOUT,
        metavar="S",
        help="a process silent this long counts as dead and the others stop (default: %(default)s)",
    )


def _check_ids(num_processes: int | None, process_id: int | None) -> None:
    """--num-processes and --process-id, when given, name a process that can exist."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and (
        process_id < 0 or (num_processes is not None and process_id >= num_processes)
    ):
        bound = "" if num_processes is None else f" and below --num-processes {num_processes}"
        raise ValueError(f"--process-id must be >= 0{bound}, got {process_id}")


def initialize(args: argparse.Namespace) -> bool:
    """Join the processes if asked to (flags, --distributed, or JAX_COORDINATOR_ADDRESS);
    True when several processes run."""
    import jax

    flags = (args.coordinator, args.num_processes, args.process_id)
    if not (
        any(f is not None for f in flags)
        or args.distributed
        or os.environ.get("JAX_COORDINATOR_ADDRESS")
    ):
        return False
    if args.init_timeout < 1 or args.heartbeat_timeout < 1:
        raise ValueError("--init-timeout and --heartbeat-timeout must be >= 1 second")
    _check_ids(args.num_processes, args.process_id)
    # CPU collectives between processes (no effect on accelerators).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(
        f"jaxgauss {args.command}: joining the distributed runtime (a process that has not "
        f"joined within {args.init_timeout} s, or is silent for {args.heartbeat_timeout} s, "
        "stops all of them)",
        file=sys.stderr,
        flush=True,
    )
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.init_timeout,
            heartbeat_timeout_seconds=args.heartbeat_timeout,
        )
    except Exception as err:  # JAX raises RuntimeError/XlaRuntimeError on a timeout
        raise ValueError(
            f"could not join the distributed runtime within --init-timeout "
            f"{args.init_timeout} s: {err}"
        ) from None
    print(
        f"jaxgauss {args.command}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} devices",
        file=sys.stderr,
        flush=True,
    )
    return jax.process_count() > 1
