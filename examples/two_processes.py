"""Fit one file with two processes on this machine and compare with one process.

    python examples/two_processes.py rows.npy [--method welford]

Starts ``jaxgauss fit rows.npy --coordinator 127.0.0.1:PORT --num-processes 2
--process-id I`` twice (each process memory-maps its half of the rows), then
``jaxgauss fit rows.npy`` once, and prints both results and their largest difference.
On a cluster, run the first command once per host instead (docs/multi-process.md).
"""

import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    path, extra = sys.argv[1], sys.argv[2:]
    with socket.socket() as s:  # a free port for the coordinator (process 0)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fit = [sys.executable, "-m", "jaxgauss", "fit", path, "--quiet", *extra]
    with tempfile.TemporaryDirectory() as folder:
        two, one = Path(folder, "two.json"), Path(folder, "one.json")
        procs = [
            subprocess.Popen(
                fit
                + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
                + ["--process-id", str(i), "--out", str(two), "--heartbeat-timeout", "20"]
            )
            for i in range(2)
        ]
        try:
            codes = [p.wait(timeout=600) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if any(codes):
            print(f"the two processes exited with {codes}")
            return 1
        subprocess.run(fit + ["--out", str(one)], check=True, stdout=subprocess.DEVNULL)
        a, b = json.loads(two.read_text()), json.loads(one.read_text())
    diff = max(float(np.max(np.abs(np.subtract(a[key], b[key])))) for key in ("mean", "cov"))
    print(f"two processes: n = {a['n']}, mean {a['mean']}")
    print(f"one process:   n = {b['n']}, mean {b['mean']}")
    print(f"largest difference in mean and cov: {diff:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
