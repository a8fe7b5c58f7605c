"""docs/qcfs_cnn.md's statements about a convolution's fan-out map a(i), checked on the library's map.

a(i) = number of output rows whose window covers input row i (``mst_ref.nn.conv.conv_fan_out_map``).
"""

import numpy as np

from mst_ref.nn.conv import conv2d, conv_fan_out_map


def windows_covering(n, k, s, pad):
    """a(i) by brute force: count the output positions o with o s - pad <= i < o s - pad + k."""
    n_out = (n + 2 * pad - k) // s + 1
    return np.array([sum(o * s - pad <= i < o * s - pad + k for o in range(n_out)) for i in range(n)])


def test_stride_one_is_three_inside_two_at_the_borders():
    a = conv_fan_out_map(8, 3, 1, 1)
    assert np.array_equal(a, windows_covering(8, 3, 1, 1))
    assert a[0] == a[-1] == 2 and np.all(a[1:-1] == 3)


def test_stride_two_alternates_and_only_averages_to_k_over_s():
    a = conv_fan_out_map(8, 3, 2, 1)
    assert np.array_equal(a, windows_covering(8, 3, 2, 1))
    assert list(a) == [1, 2, 1, 2, 1, 2, 1, 1]  # even rows one window, odd rows two (the last at the border)
    interior = a[:6]  # three whole periods (1, 2), away from the far border
    assert interior.mean() == 1.5 and set(interior) == {1, 2}  # k / s = 3 / 2 only on average


def test_only_the_one_by_one_stride_two_shortcut_skips_positions():
    assert list(conv_fan_out_map(8, 1, 2, 0)) == [1, 0, 1, 0, 1, 0, 1, 0]
    for n, k, s, pad in [(8, 3, 1, 1), (8, 3, 2, 1), (7, 3, 2, 1), (32, 3, 2, 1), (16, 3, 1, 1)]:
        assert conv_fan_out_map(n, k, s, pad).min() >= 1


def test_the_map_counts_the_synapses_a_convolution_uses():
    # with all-ones weights, output sum = sum over input spikes of C_out a(i) a(j)
    rng = np.random.default_rng(0)
    spikes = (rng.random((1, 8, 8, 2)) < 0.5).astype(np.float64)  # (B, H, W, C)
    for k, s, pad in [(3, 2, 1), (1, 2, 0), (3, 1, 1)]:
        a = conv_fan_out_map(8, k, s, pad)
        out = conv2d(spikes, np.ones((3, 2, k, k)), None, s, pad)
        assert out.sum() == (spikes.sum(axis=(0, 3)) * 3 * np.outer(a, a)).sum()
