"""Throughput of the IF neuron: the Numba kernel against the readable NumPy reference.

Run: python benchmarks/bench_neurons.py [--T 64] [--neurons 1000000] [--repeats 3]

Prints neuron-steps per second (T * neurons / seconds) for each (and for the bare kernel, without the
argument checks' pass over x), best of ``repeats`` runs after one
warm-up call (which also compiles or loads the cached kernel), their ratio, and checks that both give the
same spikes and membrane potentials bit for bit. A script, not a test: the numbers depend on the machine.
"""

import argparse
import os
import time

import numpy as np

from mst_ref.core.kernels import if_scan
from mst_ref.core.neurons import if_neuron, if_neuron_reference


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--neurons", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 1.5, size=(args.T, args.neurons)).astype(np.float32)  # (T, M)
    lam = args.threshold
    steps = args.T * args.neurons

    v_fast = np.full(args.neurons, np.float32(lam) / 2, np.float32)
    v_ref = v_fast.copy()
    out_fast = if_neuron(x, lam, v_fast)  # warm-up (and compile / load cache)
    out_ref = if_neuron_reference(x, lam, v_ref)
    same = np.array_equal(out_fast, out_ref) and np.array_equal(v_fast, v_ref)
    del out_fast, out_ref

    t_fast = best_time(lambda: if_neuron(x, lam), args.repeats)
    t_ref = best_time(lambda: if_neuron_reference(x, lam), args.repeats)
    v = np.full(args.neurons, np.float32(lam) / 2, np.float32)
    t_kernel = best_time(lambda: if_scan(x, lam, v), args.repeats)  # no argument checks, no NaN scan

    print(f"IF neuron, float32, T = {args.T}, {args.neurons} neurons, best of {args.repeats} "
          f"(cpus: {os.cpu_count()}, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')})")
    print(f"  numba  (if_neuron)           {t_fast:8.4f} s   {steps / t_fast:12.4g} neuron-steps/s")
    print(f"  numba  (kernels.if_scan only){t_kernel:8.4f} s   {steps / t_kernel:12.4g} neuron-steps/s")
    print(f"  numpy  (if_neuron_reference) {t_ref:8.4f} s   {steps / t_ref:12.4g} neuron-steps/s")
    print(f"  ratio numba / numpy: {t_ref / t_fast:.1f}x")
    print(f"  outputs and membranes agree bit for bit: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
