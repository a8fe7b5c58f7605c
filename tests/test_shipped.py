"""The shipped trained models give their documented accuracies on the shipped sample, exactly.

data/mst_fashion.pth (RSM p = 0) and data/mst_fashion_rsm75.pth (trained with p = 0.75, so run with
p = 0.75, masks from np.random.default_rng(0)) on data/fashion_sample.npz, the first 1000 Fashion-MNIST
test images. Everything here is deterministic (float32, fixed seeds, fixed batches), so the counts are
asserted exactly; they are the numbers the README quotes.

    model                    ANN, 1000 images     SNN, first N images, T = 8 / 16 / 32
    mst_fashion.pth          923                  N = 100: 83 / 87 / 85
    mst_fashion_rsm75.pth    915 (p = 0.75)       N = 50:  35 / 42 / 42 (p = 0.75)
"""

import numpy as np
import pytest

from mst_ref.io.checkpoint import load_checkpoint, load_state_dict
from mst_ref.io.data import iterate_batches, load_dataset, prepare_images, sample_path, shipped_file

FASHION = {"mean": [0.286], "std": [0.353]}  # the shipped checkpoints' config says so (checked below)
SHIPPED = {  # file: (trained p, ANN correct of 1000, SNN images, {T: SNN correct})
    "mst_fashion.pth": (0.0, 923, 100, {8: 83, 16: 87, 32: 85}),
    "mst_fashion_rsm75.pth": (0.75, 915, 50, {8: 35, 16: 42, 32: 42}),
}


@pytest.fixture(scope="module")
def sample():
    return load_dataset(sample_path())


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_checkpoint_loads_with_its_config(name):
    p = SHIPPED[name][0]
    model = load_checkpoint(shipped_file(name))
    config = load_state_dict(shipped_file(name))[1]["config"]
    assert {k: config[k] for k in FASHION} == FASHION and config["dataset"] == "fashion-mnist"
    c = model.config
    assert (c.img_size, c.patch_size, c.in_chans, c.num_classes) == (28, 2, 1, 10)
    assert (c.embed_dim, c.depths, c.num_heads, c.window_size, c.qcfs_levels) == (48, (2, 2), (3, 6), 7, 8)
    assert not c.mlp_norm and c.mask_ratio == p
    assert len(model.site_names) == 1 + 2 * 2 * 10 + 1  # patch_embed, 10 sites per block, one downsample


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_ann_accuracy_on_the_sample(name, sample):
    p, ann_correct, _, _ = SHIPPED[name]
    model = load_checkpoint(shipped_file(name))
    rng = np.random.default_rng(0)  # masks (p > 0) drawn per batch of 100, in order
    correct = 0
    for x, y in iterate_batches(sample, 100, 28, 1, FASHION["mean"], FASHION["std"]):
        correct += int((model.ann_forward(x, mask_ratio=p, rng=rng).argmax(-1) == y).sum())
    assert len(sample) == 1000 and correct == ann_correct


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_snn_accuracy_on_a_subset(name, sample):
    p, _, n, snn_correct = SHIPPED[name]
    model = load_checkpoint(shipped_file(name))
    x = prepare_images(sample.images[:n], 28, 1, FASHION["mean"], FASHION["std"])  # (n, 1, 28, 28)
    result = model.snn_forward(x, max(snn_correct), mask_ratio=p, rng=np.random.default_rng(0))
    correct = {t: int((result.predictions[t - 1] == sample.labels[:n]).sum()) for t in snn_correct}
    assert correct == snn_correct
