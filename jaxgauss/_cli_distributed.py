"""The ``jaxgauss`` command's "several processes" options (``fit`` and ``sweep``),
joining JAX's distributed runtime from them, and ending every process together.

Why a guard of our own: left to JAX, a process that fails leaves the others waiting in
a collective or aborts them from C++ (a stack trace, a core dump): a peer that never
joins, a peer that dies, a Ctrl-C (caught by Python only between two collectives), a
SIGTERM (swallowed by JAX's preemption notifier). Here the runtime runs in JAX's
recoverable mode (a dead task is noted, not fatal to the others) without the
preemption service, and one thread per process (``_Guard``) ends it with one line on
stderr: on a signal at once, when the join takes longer than --init-timeout, and when
another process reports its end (through the runtime's key-value store) or has been
silent for --heartbeat-timeout. A process that ends tells the others first; process 0,
which hosts the runtime, leaves last. Before any data moves, the processes exchange
what each was asked to run (``fingerprint``) and refuse a disagreement everywhere.

Process 0 hosts the runtime's coordination service in a child process of its own
(``_ServiceProcess``): JAX's client aborts its process from C++ the moment the service
is gone, so a service inside process 0 would take every other process down with a
stack trace when process 0 is killed. The child outlives a killed process 0 by
--heartbeat-timeout and a margin, long enough for the others to notice its silence
and stop with their line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

__all__ = [
    "add_options",
    "disagreement",
    "finish",
    "fingerprint",
    "initialize",
    "requested",
]

# Defaults of jax.distributed.initialize's timeouts (seconds): long enough for every
# host of a cluster job to start and compile, short enough that a dead peer ends the
# others within minutes rather than hanging them in a collective.
_INIT_TIMEOUT = 300
_HEARTBEAT_TIMEOUT = 60
# JAX's own join deadline is ours plus this margin, so ours (a clean exit) comes first.
_JAX_JOIN_MARGIN = 30
# How long the service outlives a killed process 0, beyond --heartbeat-timeout.
_SERVICE_MARGIN = 10
# An input file's content is compared on this many blocks of this size, spread over it.
_SAMPLES, _SAMPLE_BYTES = 32, 4096
# Options that only place a process in the run: they may differ between processes.
_PLACE_ONLY = {
    "func",
    "coordinator",
    "num_processes",
    "process_id",
    "distributed",
    "init_timeout",
    "heartbeat_timeout",
    "quiet",
    "out",
    "checkpoint",
}

_guard: _Guard | None = None  # this process's guard, once it has asked to join


def add_options(parser: argparse.ArgumentParser, files: bool = False) -> None:
    """The options that join a command's processes (``fit``'s and ``sweep``'s);
    ``files``: also --per-process-files."""
    group = parser.add_argument_group(
        "several processes",
        "run on JAX's distributed runtime: every process runs the same command with its "
        "own --process-id (or the cluster launcher's environment sets them, as "
        "jax.distributed.initialize reads it: JAX_COORDINATOR_ADDRESS, SLURM, Open MPI); "
        "the processes check that they agree on the rest of the command before any data "
        "moves, and if one fails or is stopped, all stop (exit status 2, 130 where Ctrl-C "
        "was pressed)",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="initialise from the cluster launcher's environment (SLURM, Open MPI, ...)",
    )
    if files:
        group.add_argument(
            "--per-process-files",
            action="store_true",
            help="each process fits all rows of its own FILE(s) (they may differ), and the "
            "processes' fits combine; without it every process is given the same files "
            "and reads its share of them",
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


def requested(args: argparse.Namespace) -> bool:
    """Whether the command asks to join several processes (flags, --distributed, or
    JAX_COORDINATOR_ADDRESS)."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    return (
        any(f is not None for f in flags)
        or args.distributed
        or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    )


def _render(value) -> str:
    if value is None:
        return "not given"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def _file_entry(path: str) -> str:
    """A file as the processes compare it: its name (not its folder, which may differ
    between machines), its size and, for a regular file, a digest of 32 blocks of 4 KiB
    spread over it (cheap for any size; two machines' own files of one name and size
    differ there)."""
    if path == "-":
        return "- (stdin)"
    size = os.path.getsize(path)
    if not os.path.isfile(path):  # a FIFO or a device: reading would consume it
        return f"{os.path.basename(path)} ({size} bytes)"
    digest = hashlib.blake2b(digest_size=6)
    with open(path, "rb") as f:
        for k in range(_SAMPLES):
            f.seek(k * max(size - _SAMPLE_BYTES, 0) // (_SAMPLES - 1))
            digest.update(f.read(_SAMPLE_BYTES))
    return f"{os.path.basename(path)} ({size} bytes, sampled content {digest.hexdigest()})"


def fingerprint(args: argparse.Namespace) -> dict[str, str]:
    """What every process must agree on, option by option: the command's options as
    given (those that only place a process excepted; outputs, which process 0 writes,
    too) and the input files by name, size and sampled content (not with
    --per-process-files).

    Example:
      >>> fingerprint(argparse.Namespace(command="fit", method="natural",
      ...     learning_rate=0.01, float64=True, process_id=1, file=["-"]))
      {'command': 'fit', '--method': 'natural', '--learning-rate': '0.01', '--float64': 'on', 'FILE': '- (stdin)'}
    """
    out = {}
    for key, value in vars(args).items():
        if key in _PLACE_ONLY or (key == "file" and getattr(args, "per_process_files", False)):
            continue
        if key in ("file", "resume") and value is not None:
            value = [_file_entry(p) for p in ([value] if isinstance(value, str) else value)]
        name = {"file": "FILE", "command": "command"}.get(key, "--" + key.replace("_", "-"))
        out[name] = _render(value)
    return out


def _processes(ids: list[int]) -> str:
    return f"process {ids[0]}" if len(ids) == 1 else f"processes {', '.join(map(str, ids))}"


def disagreement(runs: list[dict[str, str]]) -> str | None:
    """The options on which the processes' fingerprints differ, each with its values
    and the processes that gave them, as one line; None when they agree.

    Example:
      >>> disagreement([{"--method": "welford"}, {"--method": "natural"}])
      'the processes were not given the same command (only --process-id, --coordinator, the timeouts and the outputs may differ): --method: welford (process 0), natural (process 1)'
    """
    parts = []
    for key in dict.fromkeys(k for run in runs for k in run):
        by_value: dict[str, list[int]] = {}
        for p, run in enumerate(runs):
            by_value.setdefault(run.get(key, "absent"), []).append(p)
        if len(by_value) > 1:
            values = ", ".join(f"{v} ({_processes(ps)})" for v, ps in by_value.items())
            parts.append(f"{key}: {values}")
    if not parts:
        return None
    hint = (
        "; to fit each process's own files, pass --per-process-files in every process"
        if any(p.startswith("FILE:") for p in parts)
        else ""
    )
    return (
        "the processes were not given the same command (only --process-id, --coordinator, "
        f"the timeouts and the outputs may differ): {'; '.join(parts)}{hint}"
    )


class _Guard:
    """The thread that ends this process, with one line on stderr, on SIGINT (status
    130) or SIGTERM (2), when the join outlasts --init-timeout, and, once watching,
    when another process has ended with an error or fallen silent (2). Once joined it
    beats (a counter in the runtime's key-value store) for the others to watch.
    ``end`` is also how the main thread ends a process that asked to join."""

    def __init__(self, command: str, init_timeout: int, heartbeat_timeout: int):
        self.command, self.init_timeout, self.heartbeat = command, init_timeout, heartbeat_timeout
        self.deadline = time.monotonic() + init_timeout
        self.stderr = os.fdopen(os.dup(2), "w")  # ours, also while JAX's is quieted
        self.client, self.me, self.n, self.service = None, 0, 1, None
        self.beats: dict[str, tuple[str, float]] = {}  # key -> (last value, when it changed)
        self.watching = False
        self.lock, self.ending = threading.Lock(), False
        # A Python signal handler runs only between bytecodes of the main thread, which
        # may wait in a collective for good; the wakeup fd tells this thread at once.
        self.wake, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        threading.Thread(target=self._run, daemon=True).start()

    def joined(self, client, me: int, n: int) -> None:
        self.client, self.me, self.n = client, me, n

    def _run(self) -> None:
        count = 0
        while True:
            ready, _, _ = select.select([self.wake], [], [], 0.25)
            if ready:
                sig = os.read(self.wake, 1)[0]
                if sig == signal.SIGINT:
                    return self.end(130, "interrupted (Ctrl-C)", "interrupted")
                message = f"terminated (signal {sig})"
                return self.end(2, message, f"error: {message}")
            if self.client is None:
                if time.monotonic() > self.deadline:
                    message = _no_join_message(self.init_timeout)
                    return self.end(2, message, f"error: {message}")
                continue
            count += 1
            try:
                self.client.key_value_set(f"jaxgauss/beat/{self.me}", str(count), True)
                message = self._peer_failure() if self.watching else None
            except Exception:  # the runtime itself is gone
                message = "lost contact with process 0, which runs the distributed runtime"
            if message is not None:
                time.sleep(1.0)  # an error every process raises: let this one's own line come
                return self.end(2, message, f"error: {message}")

    def _records(self) -> tuple[dict[int, dict], list[int]]:
        """The other processes' exit records, by process, and those silent for
        --heartbeat-timeout without one."""
        found = dict(self.client.key_value_dir_get("jaxgauss/"))
        now, exits, silent = time.monotonic(), {}, []
        for p in range(self.n):
            if p == self.me:
                continue
            if (record := found.get(f"jaxgauss/exit/{p}")) is not None:
                exits[p] = json.loads(record)
                continue
            key = f"jaxgauss/beat/{p}"
            last, since = self.beats.get(key, (None, now))
            if found.get(key) != last:
                last, since = found.get(key), now
            self.beats[key] = (last, since)
            if now - since > self.heartbeat:
                silent.append(p)
        return exits, silent

    def _peer_failure(self) -> str | None:
        """Why another process ended (its message, or its silence), or None."""
        exits, silent = self._records()
        for p, record in exits.items():
            if record["code"] != 0:
                return f"process {p} stopped: {record['message']}"
        if silent:
            return (
                f"process {silent[0]} stopped without a word (killed, or its machine is "
                f"down): silent for {self.heartbeat} s"
            )
        return None

    def end(self, code: int, message: str | None, line: str | None) -> None:
        """Print ``line`` (None: the main thread printed its own), tell the others
        ``message``, leave the runtime and exit with ``code``."""
        with self.lock:
            busy, self.ending = self.ending, True
        if busy:
            if threading.current_thread() is threading.main_thread():
                threading.Event().wait()  # the guard is ending the process
            return
        if line is not None:
            print(f"jaxgauss {self.command}: {line}", file=self.stderr)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            self.stderr.flush()
            if self.client is not None:
                self._leave(code, message)
            if self.service is not None:  # process 0: its service stops after this exit
                self.service.shutdown()
        os._exit(code)

    def _leave(self, code: int, message: str | None) -> None:
        """Tell the others how this process ends; process 0, whose runtime the others
        need until they have left, waits for them (up to --heartbeat-timeout)."""
        first = (message or "").strip().split("\n")[0]  # the others print it on one line
        record = json.dumps({"code": code, "message": first or f"exit status {code}"})
        self.client.key_value_set(f"jaxgauss/exit/{self.me}", record)
        if self.me != 0:
            self.client.shutdown()
            return
        until = time.monotonic() + self.heartbeat + 2
        while time.monotonic() < until and sum(map(len, self._records())) < self.n - 1:
            time.sleep(0.1)
        # Every other process has said it ends (or is silent): this call returns once
        # those alive have left the runtime.
        wait = threading.Thread(
            target=self.client.get_live_nodes, args=(list(range(self.n)),), daemon=True
        )
        wait.start()
        wait.join(max(0.5, until - time.monotonic()))


# The coordination service's process: it stops when process 0 has ended (its end of
# the pipe closed), at once after process 0's "stop", else after ``linger`` seconds.
_SERVICE = """
import json, sys, time
from jax._src.lib import _jax
address, nodes, options, linger = sys.argv[1:]
try:
    service = _jax.get_distributed_runtime_service(address, int(nodes), **json.loads(options))
except Exception as err:
    print(" ".join(str(err).split()), flush=True)
    sys.exit(1)
print("ready", flush=True)
if sys.stdin.readline() != "stop\\n":
    time.sleep(float(linger))
sys.stdin.read()
"""


class _ServiceProcess:
    """JAX's coordination service run in a child process (what process 0's
    ``jax.distributed.initialize`` gets instead of the service itself, see
    ``_service_in_a_child``); raises RuntimeError when it cannot start."""

    def __init__(self, address: str, num_nodes: int, *, linger: float, wait: float, **options):
        options = json.dumps({k: v for k, v in options.items() if v is not None})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVICE, address, str(num_nodes), options, str(linger)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the runtime's log lines
            text=True,
            start_new_session=True,  # a Ctrl-C is process 0's to handle, not the service's
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        said = self.proc.stdout.readline().strip() if ready else None
        if said != "ready":
            self.proc.kill()
            if said is None:
                raise RuntimeError(f"the runtime's service did not start within {wait} s")
            why = f": {said}" if said else " (a port in use?)"  # its error, or a crash
            raise RuntimeError(f"the runtime's service could not start on {address}{why}")

    def shutdown(self) -> None:
        """Process 0 ends (not killed): the service stops once it has exited."""
        with contextlib.suppress(OSError):
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()


@contextlib.contextmanager
def _service_in_a_child(guard: _Guard, linger: float, wait: float):
    """While ``jax.distributed.initialize`` runs, its service is a ``_ServiceProcess``
    (``guard`` stops it when the process ends)."""
    from jax._src.lib import _jax

    def start(*args, **options) -> _ServiceProcess:
        guard.service = _ServiceProcess(*args, linger=linger, wait=wait, **options)
        return guard.service

    make = _jax.get_distributed_runtime_service
    _jax.get_distributed_runtime_service = start
    try:
        yield
    finally:
        _jax.get_distributed_runtime_service = make


def _no_join_message(init_timeout: int) -> str:
    return (
        f"could not join the distributed runtime within --init-timeout {init_timeout} s: "
        "start every process within that time, with the same --coordinator HOST:PORT "
        "(process 0's address, a port free there and reachable from every process) and "
        "--num-processes"
    )


@contextlib.contextmanager
def _quiet_stderr():
    """fd 2 to /dev/null: JAX's runtime logs a warning about its recoverable mode."""
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _agree(args: argparse.Namespace, client, me: int, n: int, timeout: int) -> None:
    """Exchange the processes' fingerprints; the same ValueError in every process
    when they differ."""
    client.key_value_set(f"jaxgauss/run/{me}", json.dumps(fingerprint(args)))
    runs = []
    for p in range(n):
        try:
            got = client.blocking_key_value_get(f"jaxgauss/run/{p}", timeout * 1000)
        except Exception:  # a timeout
            raise ValueError(
                f"process {p} joined but did not send its command within "
                f"--heartbeat-timeout {timeout} s"
            ) from None
        runs.append(json.loads(got))
    message = disagreement(runs)
    if message is not None:
        raise ValueError(message)


def initialize(args: argparse.Namespace) -> bool:
    """Join the processes if asked to (``requested``), check that they run the same
    command and guard them; True when several processes run."""
    global _guard
    import jax
    from jax._src import distributed

    if not requested(args):
        return False
    if args.init_timeout < 1 or args.heartbeat_timeout < 1:
        raise ValueError("--init-timeout and --heartbeat-timeout must be >= 1 second")
    _check_ids(args.num_processes, args.process_id)
    # CPU collectives between processes (no effect on accelerators); a dead task is
    # noted, not fatal to the others; SIGTERM is ours, not the preemption notifier's.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)
    jax.config.update("jax_enable_preemption_service", False)
    print(
        f"jaxgauss {args.command}: joining the distributed runtime (a process that has not "
        f"joined within {args.init_timeout} s, or is silent for {args.heartbeat_timeout} s, "
        "stops all of them)",
        file=sys.stderr,
        flush=True,
    )
    _guard = _Guard(args.command, args.init_timeout, args.heartbeat_timeout)
    try:
        linger = args.heartbeat_timeout + _SERVICE_MARGIN
        with _quiet_stderr(), _service_in_a_child(_guard, linger, args.init_timeout):
            jax.distributed.initialize(
                coordinator_address=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
                initialization_timeout=args.init_timeout + _JAX_JOIN_MARGIN,
                heartbeat_timeout_seconds=args.heartbeat_timeout,
            )
    except Exception as err:  # JAX raises RuntimeError/XlaRuntimeError on a bad address
        raise ValueError(f"{_no_join_message(args.init_timeout)} ({err})") from None
    client, me, n = distributed.global_state.client, jax.process_index(), jax.process_count()
    _guard.joined(client, me, n)
    _agree(args, client, me, n, args.heartbeat_timeout)
    _guard.watching = True
    print(
        f"jaxgauss {args.command}: process {me} of {n}, "
        f"{jax.local_device_count()} local / {jax.device_count()} devices",
        file=sys.stderr,
        flush=True,
    )
    return n > 1


def finish(code: int, message: str | None) -> int:
    """The command's exit status ``code`` (``message``: its error, already printed);
    a process that joined others ends here, after telling them."""
    if _guard is not None:
        _guard.end(code, message, None)
    return code
