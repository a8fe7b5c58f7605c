"""Claims the docs make about the IF neuron's first step (docs/mst.md section 2, mst_ref/core/neurons.py)."""

import numpy as np

from mst_ref.core.neurons import if_neuron


def test_the_pre_charge_lets_a_neuron_fire_at_step_one_from_half_the_threshold():
    for lam in (1.0, 0.37, 5.5):
        for dtype in (np.float32, np.float64):
            x1 = np.array([0.0, 0.25, 0.49, 0.5, 0.51, 1.0, 3.0], dtype=dtype) * dtype(lam)  # (7,) first inputs
            s = if_neuron(x1[None], lam)[0]  # (7,) step 1
            # v = lambda / 2 + x_1 >= lambda  <=>  x_1 >= lambda / 2
            assert np.array_equal(s != 0, [False, False, False, True, True, True, True])
