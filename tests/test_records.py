"""Recordable quantities beyond the sites: attention probabilities and membrane potentials.

The CLI and the tutorials draw these; they read them from the model (``record=``) instead of
recomputing softmax, batch norm and the relative position bias themselves. Checked against the
definitions: p = softmax(a + B_rel) of the recorded attention-score spikes, and an IF neuron fires at
step t exactly when its recorded membrane potential reaches lambda.
"""

import numpy as np
import pytest

from mst_ref.nn.attention import softmax
from mst_ref.models.mst import MST
from mst_ref.models.mst_layout import MSTConfig
from mst_ref.core.neurons import if_neuron_reference
from mst_ref.nn.windows import relative_position_bias

CFG = MSTConfig(img_size=8, patch_size=2, in_chans=3, num_classes=3, embed_dim=8, depths=(2,), num_heads=(2,),
                window_size=2, qcfs_levels=4)
BLOCK = "layers.0.blocks.0"


@pytest.fixture(scope="module")
def model():
    return MST.random(CFG, np.random.default_rng(0))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)


def bias(model):
    s = model.state
    return relative_position_bias(s[f"{BLOCK}.attn.relative_position_bias_table"],
                                  s[f"{BLOCK}.attn.relative_position_index"])  # (nH, N, N)


def test_snn_records_attention_probabilities_and_membranes(model, images):
    T = 5
    r = model.snn_forward(images, T, record=[f"{BLOCK}.attn.softmax", f"{BLOCK}.attn.attn_if",
                                             f"{BLOCK}.shortcut1_if", f"{BLOCK}.shortcut1_if.membrane"])
    p = r.records[f"{BLOCK}.attn.softmax"]  # (T, B, nW, nH, N, N)
    assert p.shape == (T, 2, 4, 2, 4, 4)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)  # each query's row is a distribution
    np.testing.assert_array_equal(p, softmax(r.records[f"{BLOCK}.attn.attn_if"] + bias(model)))
    # an IF neuron fires exactly when v (after adding the input, before the reset) reaches lambda
    lam = model.state[f"{BLOCK}.shortcut1_if.up"][0]
    v = r.records[f"{BLOCK}.shortcut1_if.membrane"]  # (T, B, N, C)
    np.testing.assert_array_equal((v >= lam) * lam, r.records[f"{BLOCK}.shortcut1_if"])
    # recording a probe runs the readable path; the numbers are those of the fused one
    np.testing.assert_array_equal(r.cumulative_logits, model.snn_forward(images, T).cumulative_logits)


def test_membrane_is_the_if_recurrence_by_hand():
    from mst_ref.engine.modes import membrane_before_reset
    x = np.array([[0.4], [0.4], [0.4], [-0.2]], np.float64)  # (T, 1), lambda = 1, pre-charge 0.5
    out = if_neuron_reference(x, 1.0)
    v = membrane_before_reset(x, out, np.full(1, 0.5))
    # v: 0.5 + 0.4 = 0.9 (no spike), 1.3 (spike, -> 0.3), 0.7, 0.5
    np.testing.assert_allclose(v[:, 0], [0.9, 1.3, 0.7, 0.5])
    np.testing.assert_array_equal(out[:, 0], [0, 1, 0, 0])


def test_ann_records_probabilities_and_refuses_membranes(model, images):
    logits, rec = model.ann_forward(images, record="layers.0.*.softmax")
    assert list(rec) == [f"{BLOCK}.attn.softmax", "layers.0.blocks.1.attn.softmax"]
    np.testing.assert_allclose(rec[f"{BLOCK}.attn.softmax"].sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="only in the SNN"):
        model.ann_forward(images, record=f"{BLOCK}.shortcut1_if.membrane")
    with pytest.raises(ValueError, match="probe_names"):
        model.snn_forward(images, 2, record="layers.9.*.softmax")
    assert not any(n.endswith(".membrane") for n in model.select_sites("all"))  # "all": sites only
