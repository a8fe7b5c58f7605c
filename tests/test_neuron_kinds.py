"""Neurons for fewer time steps (signed, burst, signed-burst): hand-checked recurrences, the properties
proved in :func:`mst_ref.core.neurons.multilevel_neuron_reference`, the Numba kernel against its NumPy twin,
and the neurons inside a model (state, chunking, records, RSM, honest spike and pair counts).

The kernel tests are marked ``kernels``: CI runs them again with NUMBA_DISABLE_JIT=1.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mst_ref.models import mst_fast
from mst_ref.models.mst import MST, MSTConfig
from mst_ref.engine.modes import Mode
from mst_ref.engine.monitors import event_pairs, nonzero_pairs
from mst_ref.core.neurons import (burst_neuron, multilevel_neuron, multilevel_neuron_reference, neuron_kind,
                             signed_burst_neuron, signed_neuron)
from mst_ref.core.qcfs import qcfs, qcfs_clamp_first

SETTINGS = settings(max_examples=25, deadline=None)  # kept small: CI reruns these without JIT
DTYPES = [np.float32, np.float64]
NEW_NEURONS = ["signed", "burst", "signed-burst"]

dtypes = st.sampled_from(DTYPES)
thresholds = st.floats(0.01, 100.0)


@st.composite
def input_trains(draw, max_T=16, max_side=4):
    """(x (T, ...), lambda): an input train of any shape, values from -3 lambda to 3 lambda."""
    dtype = draw(dtypes)
    lam = draw(thresholds)
    T = draw(st.integers(1, max_T))
    rest = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    u = draw(hnp.arrays(np.float64, (T,) + rest, elements=st.floats(-3.0, 3.0)))
    return (u * lam).astype(dtype), lam


# ---------------------------------------------------------------- the recurrences, by hand


@pytest.mark.kernels
@pytest.mark.parametrize("fn", [multilevel_neuron, multilevel_neuron_reference])
def test_signed_neuron_three_steps_by_hand(fn):
    # lambda = 2 (K = 1): fire +1 when v + x >= 1, -1 when v + x < -1 and a spike was emitted before.
    # x = 3, -2.5, -1: u = 3 -> k = floor(1.5 + .5) = 2, clipped to 1, out 2, v = 1;
    #   u = -1.5 -> k = floor(-.75 + .5) = -1, n = 1 so allowed: out -2, v = 0.5, n = 0;
    #   u = -0.5 -> k = floor(-.25 + .5) = 0: nothing, v = -0.5.
    v, n = np.zeros(1), np.zeros(1, np.int64)
    out = fn(np.array([[3.0], [-2.5], [-1.0]]), 2.0, 1, True, v, n)
    np.testing.assert_array_equal(out[:, 0], [2.0, -2.0, 0.0])
    assert v[0] == -0.5 and n[0] == 0
    # a negative spike never comes before a positive one: x = -5 leaves the neuron silent
    np.testing.assert_array_equal(fn(np.array([[-5.0], [1.0]]), 2.0, 1, True)[:, 0], [0.0, 0.0])


@pytest.mark.kernels
@pytest.mark.parametrize("fn", [multilevel_neuron, multilevel_neuron_reference])
def test_burst_neuron_three_steps_by_hand(fn):
    # lambda = 2, K = 4: spikes of 0.5. x = 1.3, 0.1, 9:
    #   u = 1.3 -> k = floor(2.6 + .5) = 3, out 1.5, v = -0.2;  u = -0.1 -> k = floor(-.2 + .5) = 0;
    #   u = 8.9 -> k = floor(17.8 + .5) = 18, clipped to 4: out 2.0, v = 6.9
    v = np.zeros(1)
    out = fn(np.array([[1.3], [0.1], [9.0]]), 2.0, 4, False, v)
    np.testing.assert_array_equal(out[:, 0], [1.5, 0.0, 2.0])
    np.testing.assert_allclose(v, [6.9], rtol=1e-12)


# ---------------------------------------------------------------- the properties of the docstring


@pytest.mark.kernels
@SETTINGS
@given(hnp.arrays(np.float64, st.integers(1, 64), elements=st.floats(-2.0, 3.0)), thresholds, dtypes,
       st.integers(1, 16), st.booleans())
def test_burst_at_one_step_is_qcfs_bit_for_bit(u, lam, dtype, L, clamp_first):
    x = (u * lam).astype(dtype)  # (M,)
    quantizer = qcfs_clamp_first if clamp_first else qcfs
    out = burst_neuron(x[None], lam, L, clamp_first=clamp_first)[0]  # (M,)
    np.testing.assert_array_equal(out, quantizer(x, lam, L))
    assert out.dtype == dtype


@pytest.mark.kernels
@SETTINGS
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.integers(-200, 200)))
def test_signed_cumulative_output_never_negative_and_moves_toward_qcfs_of_the_running_mean(j):
    # x = j / 64 with lambda = 1: dyadic, so every sum is exact in float64 and the proof holds exactly.
    x = j / 64.0  # (T, M)
    out = signed_neuron(x, 1.0)  # (T, M)
    N = np.cumsum(out, axis=0)  # (T, M) net spikes (lambda = 1)
    assert (N >= 0).all()
    X = np.cumsum(x, axis=0)  # (T, M)
    t = np.arange(1, x.shape[0] + 1)[:, None]  # (T, 1)
    target = np.clip(np.floor(X + 0.5), 0, t)  # N*_t: t qcfs(X_t / t, lambda, levels=t) / lambda
    previous = np.vstack([np.zeros((1, x.shape[1])), N[:-1]])  # (T, M)
    # N_t = N_{t-1} + sign(N*_t - N_{t-1})
    np.testing.assert_array_equal(N, previous + np.sign(target - previous))


@pytest.mark.kernels
@SETTINGS
@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.integers(-63, 63)))
def test_signed_with_inputs_below_lambda_is_t_times_qcfs_of_the_running_mean_exactly(j):
    x = j / 64.0  # (T, M), |x| < lambda = 1, dyadic
    N = np.cumsum(signed_neuron(x, 1.0), axis=0)  # (T, M)
    X = np.cumsum(x, axis=0)
    for t in range(1, x.shape[0] + 1):
        exact = np.clip(np.floor(X[t - 1] + 0.5), 0, t)  # N*_t
        np.testing.assert_array_equal(N[t - 1], exact)
        assert np.all(np.abs(N[t - 1] - np.clip(X[t - 1], 0, t)) <= 0.5)  # within lambda / 2
        # and it is t qcfs(X_t / t, lambda, levels=t) wherever that QCFS is not at a tie
        not_tie = np.abs((X[t - 1] + 0.5) % 1.0) > 1e-9
        q = t * qcfs(X[t - 1] / t, 1.0, levels=t)
        np.testing.assert_allclose(N[t - 1][not_tie], q[not_tie], atol=1e-9)


@pytest.mark.kernels
@pytest.mark.parametrize("neuron", NEW_NEURONS)
@pytest.mark.parametrize("T", [1, 2, 4, 8, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_input_mean_equals_qcfs_with_T_times_K_levels_including_ties(neuron, T, dtype):
    # lambda = 4, x = j lambda / (2 T K): dyadic, so the arithmetic is exact and odd j are exact ties
    K, signed = neuron_kind(neuron, levels=4)
    lam = 4.0
    x = (np.arange(-3, 2 * T * K + 4) * lam / (2 * T * K)).astype(dtype)  # (M,)
    out = multilevel_neuron(np.broadcast_to(x, (T,) + x.shape), lam, K, signed)  # (T, M)
    np.testing.assert_array_equal(out.mean(axis=0), qcfs(x, lam, levels=T * K))


@pytest.mark.kernels
@SETTINGS
@given(input_trains(), st.integers(1, 9), st.booleans(), st.booleans(), st.booleans())
def test_kernel_equals_reference_bit_exact_with_carried_state(train, K, signed, clamp_first, carry):
    x, lam = train
    rng = np.random.default_rng(0)
    v0 = np.array(rng.uniform(-0.5, 0.5, x.shape[1:]) * lam / K, dtype=x.dtype) if carry else np.zeros(x.shape[1:], x.dtype)
    n0 = np.array(rng.integers(0, 3 * K, x.shape[1:]), dtype=np.int64) if carry else np.zeros(x.shape[1:], np.int64)
    v1, v2, n1, n2 = v0.copy(), v0.copy(), n0.copy(), n0.copy()
    fast = multilevel_neuron(x, lam, K, signed, v1, n1 if signed else None, clamp_first)
    ref = multilevel_neuron_reference(x, lam, K, signed, v2, n2 if signed else None, clamp_first)
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(n1, n2)
    assert fast.dtype == x.dtype
    # outputs are k lambda / K with |k| <= K, k >= 0 unless signed
    k = np.rint(ref.astype(np.float64) * K / float(x.dtype.type(lam)))
    assert np.all(np.abs(k) <= K) and (signed or np.all(k >= 0))


@pytest.mark.kernels
@SETTINGS
@given(input_trains(max_T=20), st.sampled_from(NEW_NEURONS), st.data())
def test_chunked_calls_with_carried_state_equal_one_call(train, neuron, data):
    x, lam = train
    K, signed = neuron_kind(neuron, levels=3)
    T = x.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(1, T), max_size=4)))
    v, n = np.zeros(x.shape[1:], x.dtype), np.zeros(x.shape[1:], np.int64)
    chunks = [multilevel_neuron(x[a:b], lam, K, signed, v, n if signed else None)
              for a, b in zip([0] + cuts, cuts + [T]) if b > a]
    np.testing.assert_array_equal(np.concatenate(chunks), multilevel_neuron(x, lam, K, signed))


@pytest.mark.kernels
def test_named_wrappers_and_a_large_parallel_call():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2600)).astype(np.float32)  # several kernel blocks of 1024 neurons
    np.testing.assert_array_equal(signed_neuron(x, 0.7), multilevel_neuron_reference(x, 0.7, 1, True))
    np.testing.assert_array_equal(burst_neuron(x, 0.7, 5), multilevel_neuron_reference(x, 0.7, 5, False))
    np.testing.assert_array_equal(signed_burst_neuron(x, 0.7, 5), multilevel_neuron_reference(x, 0.7, 5, True))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: multilevel_neuron(np.zeros((2, 3), np.int32), 1.0), "x must be a float32 or float64"),
        (lambda: multilevel_neuron(np.zeros((0, 3)), 1.0), "T >= 1"),
        (lambda: multilevel_neuron(np.zeros((2, 3)), 1.0, 0), "max_spikes must be an integer >= 1"),
        (lambda: multilevel_neuron(np.zeros((2, 3)), -1.0), "threshold"),
        (lambda: multilevel_neuron(np.zeros((2, 3)), 1.0, 1, True, None, np.zeros(3)), "n must be a writeable int64"),
        (lambda: multilevel_neuron(np.zeros((2, 3)), 1.0, 1, False, np.zeros(2)), "v must be a writeable"),
        (lambda: neuron_kind("lif", 8), "neuron must be one of"),
        (lambda: neuron_kind("signed", 8, 4), "burst_max applies to the burst neurons"),
        (lambda: neuron_kind("burst", 8, 0), "burst_max must be an integer >= 1"),
    ],
)
def test_bad_arguments_say_what_was_expected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- inside a model

CFG = MSTConfig(img_size=16, patch_size=2, in_chans=3, num_classes=5, embed_dim=8, depths=(2, 2),
                num_heads=(2, 4), window_size=4, qcfs_levels=4)


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)


def test_mode_refuses_unknown_neurons_and_misplaced_burst_max():
    with pytest.raises(ValueError, match="neuron must be one of"):
        Mode(spiking=True, neuron="lif")
    with pytest.raises(ValueError, match="burst_max applies to the burst neurons"):
        Mode(spiking=True, neuron="if", burst_max=2)
    with pytest.raises(ValueError, match="burst_max applies to the burst neurons"):
        Mode(spiking=True, neuron="signed", burst_max=2)
    with pytest.raises(ValueError, match="burst_max must be an integer >= 1"):
        Mode(spiking=True, neuron="burst", burst_max=0)
    assert Mode(spiking=True, neuron="burst", levels=8).max_spikes == 8
    assert Mode(spiking=True, neuron="signed-burst", levels=8, burst_max=3).max_spikes == 3


def test_only_the_if_neuron_takes_the_fused_path():
    assert mst_fast.supports(Mode(spiking=True))
    for neuron in NEW_NEURONS:
        assert not mst_fast.supports(Mode(spiking=True, neuron=neuron))


def test_burst_snn_at_one_step_is_the_ann(model, images):
    # every site is QCFS (the burst neuron with K = L at T = 1), every analog op sees the same values
    ann = model.ann_forward(images)
    for neuron in ("burst", "signed-burst"):
        r = model.snn_forward(images, 1, neuron=neuron)
        np.testing.assert_allclose(r.step_logits[0], ann, rtol=1e-5, atol=1e-5)
        assert r.neuron == neuron and r.max_spikes == CFG.qcfs_levels


@pytest.mark.parametrize("neuron", NEW_NEURONS)
@pytest.mark.parametrize("compensation", ["none", "expectation"])
def test_step_by_step_equals_multi_step_equals_chunked(model, images, neuron, compensation):
    def run(chunk):
        sim = model.step_simulator(images, mask_ratio=0.5, rng=np.random.default_rng(7), compensation=compensation,
                                   record="layers.0.blocks.0.attn.*", neuron=neuron, burst_max=3
                                   if "burst" in neuron else None)
        return sim.run(6, chunk)

    whole, steps, chunks = run(6), run(1), run(4)
    for other in (steps, chunks):
        np.testing.assert_array_equal(other.step_logits, whole.step_logits)
        for name in whole.spike_counts_per_step:
            np.testing.assert_array_equal(other.spike_counts_per_step[name], whole.spike_counts_per_step[name])
        for name in whole.records:
            np.testing.assert_array_equal(other.records[name], whole.records[name])
        assert other.product_pairs_per_step.keys() == whole.product_pairs_per_step.keys()
        for name in whole.product_pairs_per_step:
            np.testing.assert_array_equal(other.product_pairs_per_step[name], whole.product_pairs_per_step[name])


@pytest.mark.parametrize("neuron, burst_max", [("signed", None), ("burst", 3), ("signed-burst", 3)])
@pytest.mark.parametrize("rescale", [False, True])
def test_counts_are_spikes_not_nonzero_outputs(model, images, neuron, burst_max, rescale):
    # a burst of k spikes counts k, a negative spike counts 1: count = sum |y| / (lambda / K (x gain))
    p = 0.25
    r = model.snn_forward(images, 5, mask_ratio=p, rng=np.random.default_rng(2), record="all", neuron=neuron,
                          burst_max=burst_max, mask_rescale=rescale)
    K = r.max_spikes
    several = negative = False
    for name, y in r.records.items():
        gain = 1 / (1 - p) if rescale and name in r.mask_ratios else 1.0
        unit = float(model.threshold(name)[0]) / K * gain
        k = np.abs(y.astype(np.float64)) / unit  # (T, B, ...)
        np.testing.assert_allclose(k, np.rint(k), atol=1e-3)
        np.testing.assert_array_equal(r.spike_counts_per_step[name], np.rint(k).reshape(5, -1).sum(axis=1))
        several |= bool((np.rint(k) > 1).any())
        negative |= bool((y < 0).any())
    assert several == (K > 1)
    assert negative == ("signed" in neuron)
    # products: each spike of one operand meets each spike of the other
    name = "layers.0.blocks.0.attn"
    q, k = r.records[f"{name}.q_if"], r.records[f"{name}.k_if"]
    unit_q = float(model.threshold(f"{name}.q_if")[0]) / K
    unit_k = float(model.threshold(f"{name}.k_if")[0]) / K
    eq = np.rint(np.abs(q) / (unit_q * (1 / (1 - p) if rescale and f"{name}.q_if" in r.mask_ratios else 1)))
    ek = np.rint(np.abs(k) / (unit_k * (1 / (1 - p) if rescale and f"{name}.k_if" in r.mask_ratios else 1)))
    expected = event_pairs(eq.astype(np.int64), ek.astype(np.int64).swapaxes(-1, -2))
    np.testing.assert_array_equal(r.product_pairs_per_step[f"{name}.qk"], expected)
    assert r.sops == sum(r.sops_by_site.values()) > 0


def test_event_pairs_of_zero_one_events_are_nonzero_pairs():
    rng = np.random.default_rng(4)
    a = rng.random((3, 2, 5, 4)) * (rng.random((3, 2, 5, 4)) > 0.5)  # (T, h, n, k)
    b = rng.random((3, 2, 4, 6)) * (rng.random((3, 2, 4, 6)) > 0.5)  # (T, h, k, m)
    np.testing.assert_array_equal(event_pairs((a != 0).astype(np.int64), (b != 0).astype(np.int64)),
                                  nonzero_pairs(a, b))
    # a burst of 3 meeting a burst of 2 is 6 events
    np.testing.assert_array_equal(event_pairs(np.full((1, 1, 1), 3), np.full((1, 1, 1), 2)), [6])


def test_the_default_neuron_is_the_published_if_neuron(model, images):
    a = model.snn_forward(images, 4)
    b = model.snn_forward(images, 4, neuron="if")
    np.testing.assert_array_equal(a.step_logits, b.step_logits)
    assert a.neuron == "if" and a.max_spikes == 1


def test_membrane_probe_is_for_the_if_neuron_only(model, images):
    probes = getattr(model, "probe_names", None)
    if not probes:
        pytest.skip("this version records no membrane probes")
    with pytest.raises(ValueError, match="IF neuron only"):
        model.snn_forward(images, 2, neuron="signed", record="patch_embed.proj_if.membrane")


# ---------------------------------------------------------------- the command line


def _cli(*argv):
    import argparse

    from mst_ref.cli import energy as cli_energy
    from mst_ref.cli import run as cli_run
    parser = argparse.ArgumentParser(prog="mst-ref")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_run.add_eval_parser(sub)
    cli_energy.add_energy_parser(sub)
    cli_energy.add_mask_sweep_parser(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from mst_ref.io.checkpoint import save_npz
    from mst_ref.models.mst_layout import random_state_dict
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    save_npz(path, random_state_dict(CFG, np.random.default_rng(0)), {"img_size": 16, "qcfs_levels": 4})
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), labels=rng.integers(0, 5, 6))
    return path


def test_eval_runs_the_chosen_neuron_and_records_it(tiny_checkpoint, tiny_data, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _cli("eval", tiny_checkpoint, "--data", tiny_data, "--timesteps", "1,2", "--neuron", "burst",
                "--json", out) == 0
    text = capsys.readouterr().out
    assert "SNN neuron: burst (up to K=4 spikes of lambda/K per step)" in text
    record = __import__("json").loads(out.read_text())
    assert record["neuron"] == "burst" and record["burst_max"] is None
    # the burst neuron with K = L at T = 1 is the ANN: same accuracy
    assert record["snn_accuracy"]["1"] == record["ann_accuracy"]


def test_energy_and_mask_sweep_name_the_neuron(tiny_checkpoint, tiny_data, capsys):
    assert _cli("energy", tiny_checkpoint, "--data", tiny_data, "--timesteps", "2", "--neuron", "signed-burst",
                "--burst-max", "2") == 0
    assert "neuron: signed-burst (up to K=2 spikes of lambda/K per step)" in capsys.readouterr().out
    assert _cli("mask-sweep", tiny_checkpoint, "--data", tiny_data, "--timesteps", "2", "--neuron", "signed",
                "--ratios", "0.5", "--seeds", "1") == 0
    assert "neuron signed" in capsys.readouterr().out


def test_burst_max_without_a_burst_neuron_is_a_usage_error(tiny_checkpoint, tiny_data):
    from mst_ref.cli.common import UsageError
    with pytest.raises(UsageError, match="--burst-max applies to --neuron burst or signed-burst"):
        _cli("eval", tiny_checkpoint, "--data", tiny_data, "--neuron", "signed", "--burst-max", "2")
    with pytest.raises(UsageError, match="--burst-max must be >= 1"):
        _cli("energy", tiny_checkpoint, "--data", tiny_data, "--neuron", "burst", "--burst-max", "0")


# ---------------------------------------------------------------- the QCFS CNNs (same Mode machinery)


@pytest.mark.parametrize("arch, in_chans, img_size, width", [("resnet18", 1, 16, 1 / 16), ("vgg16", 2, 32, 1 / 32)])
def test_burst_cnn_at_one_step_is_its_ann_with_the_cnns_own_rounding(arch, in_chans, img_size, width):
    from mst_ref.models.qcfs_cnn import CNNConfig, QCFSCNN
    cfg = CNNConfig.official(arch, in_chans=in_chans, img_size=img_size, num_classes=3, width=width)
    cnn = QCFSCNN.random(cfg, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, in_chans, img_size, img_size)).astype(np.float32)
    # qcfs_clamp_first at every site, reproduced by the burst neuron's clamp-first floor
    np.testing.assert_array_equal(cnn.snn_forward(x, 1, neuron="burst").step_logits[0], cnn.ann_forward(x))
    a = cnn.snn_forward(x, 4, neuron="signed-burst", burst_max=2)
    b = cnn.snn_forward(x, 4, neuron="signed-burst", burst_max=2, chunk=1)
    np.testing.assert_array_equal(a.step_logits, b.step_logits)
    assert a.sops == b.sops > 0
