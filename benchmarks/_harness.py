"""Measurement harness of the SNN benchmarks: one measurement per subprocess, so that each peak is its own.

A measurement is a JSON spec ``{"path", "model", "batch", "T", "threads", "repeats", "chunk", "out"}`` run as

    python benchmarks/_harness.py '<spec>'

in a fresh interpreter whose thread counts (OpenBLAS, OpenMP, MKL, Numba, torch) are fixed before NumPy is
imported, and set again at run time by :func:`mst_ref.threads.limit_threads`: mst_ref's own paths (fast,
step) run the library's policy (BLAS one thread; Numba kernels and row-split products on ``threads``), the
dense ones (ann, numpy, matmul, torch) run BLAS on ``threads``. It builds the model, warms up (compiles / loads the Numba cache, allocates), resets the
process's peak resident memory (``/proc/self/clear_refs``, Linux) and then times ``repeats`` runs, best of.
It prints one JSON line: wall and CPU seconds of the best run, the resident memory before the timed runs
and the peak during them (MiB), and it saves the cumulative logits ``(T, B, K)`` to ``out`` (.npy) so the
parent can check that the paths agree.

Paths: ``fast`` (MST.snn_forward, the fused kernels, event-driven products below the crossover density),
``dense`` (the same with BLAS products only), ``step`` (MST.step_simulator, one step per call),
``numpy`` (MST.snn_forward(fast=False), one NumPy op at a time), ``torch`` (reference/mst_torch.py
MSTTorch.snn_forward: one full forward per step, the published way), ``ann`` (one MST.ann_forward; the
parent multiplies by T), ``matmul`` (a float32 2048^3 NumPy matrix product: the machine's peak).
"""

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# shapes of the benchmark models (random weights unless "shipped")
MODELS = {
    "shipped": "Fashion-MNIST MST, data/mst_fashion.pth (embed 48, 14x14 tokens, window 7, depths 2/2)",
    "cifar32": "CIFAR-sized MST, random weights (32 px, patch 2, embed 48, depths 2/2/2, heads 3/6/12, window 4)",
    "swin_t": "Swin-T MST at 224 px, random weights (embed 96, depths 2/2/6/2, heads 3/6/12/24, window 7)",
}


def model_config(name):
    """The MSTConfig of a benchmark model (the shipped one is read from its checkpoint)."""
    from mst_ref.models.mst import MSTConfig

    if name == "cifar32":
        return MSTConfig(img_size=32, patch_size=2, in_chans=3, num_classes=10, embed_dim=48, depths=(2, 2, 2),
                         num_heads=(3, 6, 12), window_size=4)
    if name == "swin_t":
        return MSTConfig()
    raise ValueError(name)


def build(name, batch):
    """(MST, images (B, Cin, H, W) float32) of a benchmark model."""
    import numpy as np

    from mst_ref.io.checkpoint import load_checkpoint
    from mst_ref.io.data import FASHION_MNIST_MEAN, FASHION_MNIST_STD
    from mst_ref.models.mst import MST

    if name == "shipped":
        model = load_checkpoint(ROOT / "data" / "mst_fashion.pth")
        images = np.load(ROOT / "data" / "fashion_sample.npz")["images"]
        reps = -(-batch // len(images))
        images = np.concatenate([images] * reps)[:batch].astype(np.float32) / 255.0
        x = ((images - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)[:, None].astype(np.float32)
        return model, x
    config = model_config(name)
    model = MST.random(config, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((batch, config.in_chans, config.img_size, config.img_size))
    return model, x.astype(np.float32)


def network_flops(config):
    """FLOPs of one forward pass of one image (2 per multiply-accumulate of every matrix product):
    patch embedding, qkv, q k^T, p v, proj, fc1, fc2, patch merging, head. The SNN's work per image-step."""
    c = config
    n0 = (c.img_size // c.patch_size) ** 2
    macs = n0 * c.embed_dim * c.in_chans * c.patch_size**2
    for i, s in enumerate(c.stages):
        n = s.resolution**2
        per_block = n * (3 * s.dim * s.dim + s.dim * s.dim + 2 * s.dim * s.hidden)  # qkv, proj, fc1, fc2
        per_block += 2 * n * s.window**2 * s.dim  # q k^T and p v: N keys per query, hd per head, all heads
        macs += s.depth * per_block
        if i < len(c.stages) - 1:
            macs += (n // 4) * 4 * s.dim * 2 * s.dim  # reduction
    macs += c.num_features * c.num_classes
    return 2 * macs


def _rss_mib():
    """(current, peak) resident memory of this process in MiB (VmRSS, VmHWM)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def _reset_peak():
    """Make the peak resident memory start again from the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(spec):
    threads = str(spec["threads"])
    # the fast path computes its spike products event-driven below the crossover density ("auto"); the
    # "dense" path is the same code with BLAS products only (mst_ref.models.mst_fast.products)
    os.environ["MST_REF_PRODUCTS"] = "dense" if spec["path"] == "dense" else "auto"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = threads
    if spec["path"] == "torch":
        import torch  # noqa: F401  before mst_ref, whose kernels module makes OpenMP threads sleep (not torch's)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from mst_ref.threads import limit_threads

    # mst_ref's paths: the library's own policy (BLAS one thread, Numba and the row-split products on
    # `threads`); the dense references (ANN, readable NumPy path, matmul peak): BLAS on `threads`
    blas = 1 if spec["path"] in ("fast", "dense", "step") else spec["threads"]
    with limit_threads(spec["threads"], blas=blas):
        return _measure(spec, np)


def _measure(spec, np):
    path, T, batch = spec["path"], spec["T"], spec["batch"]
    if path == "matmul":
        a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
        a @ a
        best = min(_timed(lambda: a @ a)[0] for _ in range(spec["repeats"]))
        return {"gflops": 2 * 2048**3 / best / 1e9}
    model, x = build(spec["model"], batch)
    chunk = spec.get("chunk")
    if path in ("fast", "dense"):
        def run(steps):
            return model.snn_forward(x, steps, chunk=chunk).cumulative_logits
    elif path == "numpy":
        def run(steps):
            return model.snn_forward(x, steps, chunk=chunk, fast=False).cumulative_logits
    elif path == "step":
        def run(steps):
            sim = model.step_simulator(x)
            for _ in range(steps):
                sim.step()
            return sim.result().cumulative_logits
    elif path == "ann":
        def run(steps):
            return model.ann_forward(x)[None]
    elif path == "torch":
        import torch

        from reference.mst_torch import MSTTorch, RefConfig

        torch.set_num_threads(spec["threads"])
        c = model.config
        ref = MSTTorch(RefConfig(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans,
                                 num_classes=c.num_classes, embed_dim=c.embed_dim, depths=list(c.depths),
                                 num_heads=list(c.num_heads), window_size=c.window_size, mlp_ratio=c.mlp_ratio,
                                 mlp_norm=c.mlp_norm, qcfs_levels=c.qcfs_levels))
        ref.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state.items()}, strict=True)
        ref.eval()
        xt = torch.from_numpy(x)

        def run(steps):
            return ref.snn_forward(xt, steps).numpy()
    else:
        raise ValueError(path)
    run(1)  # warm-up: compile or load the Numba cache, first allocations
    base, _ = _rss_mib()
    exact_peak = _reset_peak()
    results = [_timed(lambda: run(T)) for _ in range(spec["repeats"])]
    _, peak = _rss_mib()
    wall, cpu, logits = min(results, key=lambda r: r[0])
    if spec.get("out"):
        np.save(spec["out"], logits)
    return {"wall": wall, "cpu": cpu, "rss_before_mib": base, "peak_mib": peak, "peak_is_exact": exact_peak}


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def measure(**spec):
    """Run one measurement in a fresh interpreter; returns its JSON result (dict)."""
    import subprocess

    proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
