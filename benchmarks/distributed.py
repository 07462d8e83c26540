"""The overhead of going distributed: one process against two on this machine.

``python -m benchmarks.distributed [--rows N] [--dim D]`` writes
results/distributed.json and .md. The same total rows are fitted (after a warm-up
call, median of repeats):

* one process, ``fit(est, file)`` on one device (the baseline);
* one process, ``fit(est, file, devices=jax.devices())`` (the data-parallel driver
  on its single device: what screening and combining add);
* two processes on JAX's distributed runtime (gloo collectives over 127.0.0.1), each
  with one CPU device, ``fit(est, file, devices=jax.devices())``: each reads half of
  the ``.npy`` by memory map.

It also times the collective alone: ``process_allgather`` of a (d, d) state.
On a 2-core machine the two processes share the cores with each other (and with
whatever else runs), so the ratio shows the overhead, not a speed-up; a machine
with several accelerators would show the scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3


def _methods():
    import optax

    import jaxgauss as jg

    return {
        "welford": (jg.welford(), 1),
        "adam (batch 64)": (jg.gradient_ascent(optax.adam(0.01)), 64),
    }


def _time(fn) -> float:
    fn()  # warm-up: compiles
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _worker(path: str, port: int, num: int, pid: int, rows_for: dict) -> dict:
    import jax

    if num > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", num, pid, initialization_timeout=120)
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    import jaxgauss as jg

    d = np.load(path, mmap_mode="r").shape[1]
    out = {}
    for name, (est, b) in _methods().items():
        n = rows_for[name]
        # A memory map: each process reads only its half.
        data = np.load(path, mmap_mode="r")[pid * n // num : (pid + 1) * n // num]
        res = {}
        if num == 1:
            res["one device"] = n / _time(lambda e=est, y=data, b=b: jg.fit(e, y, batch_size=b))
        res["devices=jax.devices()"] = n / _time(
            lambda e=est, y=data, b=b: jg.fit(e, y, batch_size=b, devices=jax.devices())
        )
        out[name] = res
    state = {"mean": jnp.zeros(d), "cov": jnp.zeros((d, d))}
    if num > 1:
        out["allgather_ms"] = 1e3 * _time(lambda: multihost_utils.process_allgather(state))
    return out


def _spawn(path: str, num: int, rows_for: dict) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.distributed", "--worker", path, str(port)]
            + [str(num), str(i), json.dumps(rows_for)],
            stdout=subprocess.PIPE,
            env=env,
        )
        for i in range(num)
    ]
    try:
        return [json.loads(p.communicate(timeout=1200)[0].decode().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        path, port, num, pid, rows_for = sys.argv[2:]
        print(json.dumps(_worker(path, int(port), int(num), int(pid), json.loads(rows_for))))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed")
    parser.add_argument("--rows", type=int, default=2**21, help="welford rows (adam: 1/16)")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import numpy as np

    rows_for = {"welford": args.rows, "adam (batch 64)": args.rows // 16}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "rows.npy")
        np.save(path, np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype("float32"))
        load = os.getloadavg()[0]
        one = _spawn(path, 1, rows_for)[0]
        two = _spawn(path, 2, rows_for)
        load = (load + os.getloadavg()[0]) / 2
    lines = [
        "# One process against two (same total rows)",
        "",
        f"{args.rows:,} float32 rows of d = {args.dim} for welford, {rows_for['adam (batch 64)']:,} "
        f"for adam; {os.cpu_count()} CPU cores, load average ≈ {load:.1f} while measuring "
        f"(other jobs share the cores: compare the ratios). rows/s, median of {REPEATS} after a "
        "warm-up; two processes: the slower process's rows/s × 2 is the total rate.",
        "",
        "| method | one device | devices=[1 device] | 2 processes × 1 device | 2 procs / 1 device |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    results = {"one_process": one, "two_processes": two, "rows": rows_for, "dim": args.dim}
    for name in rows_for:
        base = one[name]["one device"]
        total = 2 * min(w[name]["devices=jax.devices()"] for w in two)
        lines.append(
            f"| {name} | {base:,.0f} | {one[name]['devices=jax.devices()']:,.0f} | {total:,.0f} "
            f"| {total / base:.2f} |"
        )
    ms = max(w["allgather_ms"] for w in two)
    lines += ["", f"process_allgather of a (d, d) state between the two processes: {ms:.2f} ms."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "distributed.json").write_text(json.dumps(results | {"load": load}, indent=2))
    (args.out / "distributed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
