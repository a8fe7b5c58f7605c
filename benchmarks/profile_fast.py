"""Where the fused SNN path spends its time: BLAS products, site kernels, window attention, the rest.

Run: python benchmarks/profile_fast.py [--models shipped,cifar32,swin_t] [--threads 1] [--sizes swin_t=1x2]

Each model runs ``MST.snn_forward`` once to warm up, then once timed with the three parts wrapped in
timers: ``_gemm`` (mst_ref.models.mst_fast: the linear layers' dense steps, one BLAS product per step),
``spike_linear`` (their event-driven steps) and ``event_steps`` (the density counts that choose), the
``site_scan`` kernel (affine + IF + RSM + count at every other site) and the ``window_attention_scan``
kernel; "rest" is Python, patch embedding, merging, the head. Printed per model: image-steps per second,
each part's share of the wall time, and the products' GFLOP/s (the model's matrix-product FLOPs outside
attention, benchmarks/_harness.network_flops less q k^T and p v, over the time in ``_gemm``) against a
float32 2048^3 NumPy product on as many threads. The products already run near that peak, so the
path's speed is bounded by them: the share of time in ``_gemm`` is the largest speed-up any change to
the kernels could give. A script, not a test: the numbers depend on the machine and its load.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _harness  # noqa: E402

SIZES = {"shipped": (32, 8), "cifar32": (16, 8), "swin_t": (1, 2)}


def attention_flops(config):
    """FLOPs of q k^T and p v of one image-step (the part of network_flops done by the attention kernel)."""
    return sum(2 * s.depth * 2 * s.resolution**2 * s.window**2 * s.dim for s in config.stages)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="shipped,cifar32,swin_t")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="", help="batch and T per model, e.g. swin_t=1x2")
    args = parser.parse_args()
    sizes = dict(SIZES)
    sizes.update({name: tuple(int(v) for v in bt.split("x")) for name, bt in
                  (item.split("=") for item in args.sizes.split(",") if item)})

    import numpy as np

    from mst_ref.core import kernels
    from mst_ref.models import mst_fast
    from mst_ref.threads import limit_threads

    spent = {}

    def timed(module, name, key):
        fn = getattr(module, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
            return out
        setattr(module, name, wrapper)

    timed(mst_fast, "_gemm", "products (BLAS)")
    timed(kernels, "spike_linear", "products (events)")
    timed(mst_fast, "event_steps", "density counts")
    timed(kernels, "site_scan", "site_scan kernel")
    timed(kernels, "window_attention_scan", "attention kernel")
    with limit_threads(args.threads):
        a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
        a @ a
        peak = max(2 * 2048**3 / _timed(lambda: a @ a) for _ in range(3)) / 1e9
    print(f"# fused SNN path profile, threads={args.threads}; float32 2048^3 product: {peak:.0f} GFLOP/s")
    print(f"# load: {open('/proc/loadavg').read().split()[:3]}; command: python benchmarks/profile_fast.py "
          f"{' '.join(sys.argv[1:])}")
    for name in args.models.split(","):
        batch, T = sizes[name]
        model, x = _harness.build(name, batch)
        with limit_threads(args.threads):
            model.snn_forward(x, 1)
            spent.clear()
            wall = _timed(lambda: model.snn_forward(x, T))
        flops = _harness.network_flops(model.config)
        gemm_flops = (flops - attention_flops(model.config)) * batch * T
        parts = dict(spent, rest=wall - sum(spent.values()))
        print(f"\n## {name} B={batch}, T={T}: {batch * T / wall:.1f} image-steps/s, {wall:.2f} s")
        for key, seconds in parts.items():
            print(f"   {key:<20}{seconds:>8.2f} s {100 * seconds / wall:>5.0f}%")
        in_products = spent.get("products (BLAS)", 0.0) + spent.get("products (events)", 0.0)
        gemm_rate = gemm_flops / in_products / 1e9
        print(f"   products (BLAS and event-driven): {gemm_rate:.0f} dense-equivalent GFLOP/s = "
              f"{100 * gemm_rate / peak:.0f}% of the 2048^3 product")
    return 0


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
