"""One process of tests/test_distributed.py's real multi-process run (not a test module).

Usage: python distributed_worker.py PORT NUM_PROCESSES PROCESS_ID LOCAL_DEVICES FOLDER CHECKS

Joins the others on 127.0.0.1:PORT, runs the data-parallel checks named in CHECKS
(comma-separated) on the files the test wrote to FOLDER and writes what it got to
FOLDER/result-PROCESS_ID.json.
"""

import json
import os
import sys

port, num, pid, local, folder, checks = sys.argv[1:]
checks = checks.split(",")
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local}"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    f"127.0.0.1:{port}",
    int(num),
    int(pid),
    initialization_timeout=120,
    heartbeat_timeout_seconds=30,
)

import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxgauss as jg  # noqa: E402


def moments(res):
    return {
        "mean": np.asarray(res.estimate.mean).tolist(),
        "cov": np.asarray(res.estimate.cov).tolist(),
        "n_rows": res.n_rows,
        "n_skipped": res.n_skipped,
        "diverged_at": int(res.diverged_at),
    }


devices = jax.devices()
data = os.path.join(folder, "data.npy")
parts = [os.path.join(folder, f"part{i}.npy") for i in range(3)]
out = {"devices": len(devices), "processes": jax.process_count()}
if "welford" in checks:
    out["welford"] = moments(jg.fit(jg.welford(), data, devices=devices, chunk_rows=64))
if "exponential" in checks:
    out["exponential"] = moments(jg.fit(jg.exponential(20.0), data, devices=devices))
if "natural_files" in checks:
    out["natural_files"] = moments(jg.fit(jg.natural_gradient(), parts, devices=devices))
if "adam" in checks:
    adam = jg.fit(
        jg.gradient_ascent(optax.adam(0.05)),
        data,
        devices=devices,
        batch_size=2 * len(devices),
        trace_every=4,
    )
    out["adam"] = moments(adam) | {
        "trace_cov": np.asarray(adam.trace.estimate.cov).tolist(),
        "trace_rows": np.asarray(adam.trace.rows).tolist(),
    }
if "data_error" in checks:
    try:
        bad = [parts[0], os.path.join(folder, "bad.npy"), parts[2]]
        jg.fit(jg.welford(), bad, devices=devices)
        out["data_error"] = None
    except jg.DataError as err:
        out["data_error"] = {"row": err.row, "result": err.result}
if "unequal" in checks:
    sgd = jg.gradient_ascent(optax.sgd(0.01))
    mine = np.load(data)[: 8 - int(pid)]  # process-local rows of unequal lengths
    for name, kwargs in [
        ("unequal", {"batch_size": len(devices)}),
        ("batch", {"batch_size": len(devices) + 1}),
    ]:
        try:
            rows = mine if name == "unequal" else np.load(data)[:8]
            jg.fit(sgd, rows, devices=devices, **kwargs)
            out[name] = None
        except ValueError as err:
            out[name] = str(err)
if "sweep" in checks:
    truth = jg.Gaussian(np.zeros(2), np.eye(2))
    sw = jg.sweep(
        jg.methods.make_method("sgd", "cholesky"),
        np.array([0.01, 0.1]),
        truth=truth,
        n_steps=64,
        seeds=3,
    )
    out["sweep"] = np.asarray(sw.final_kl).tolist()
with open(os.path.join(folder, f"result-{pid}.json"), "w") as f:
    json.dump(out, f)
