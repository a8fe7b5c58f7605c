"""ANN and SNN accuracy of a QCFS CNN checkpoint in its PyTorch twin, masked as it was trained.

    python reference/eval_cnn_snn.py data/resnet18_fashion_rsm75_block_input.pth 200

The first N Fashion-MNIST test images (padded to 32 px); RSM at the checkpoint's ``mask_ratio`` and
``mask_sites`` (``reference/train_cnn.py``'s ``restrict_mask_sites``), with torch's own masks (seed 0);
SNN accuracy at T = 1, 2, 4, ..., 64 (an independent check of mst_ref's SNN on the same model).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reference.qcfs_cnn_torch import CNNConfig, build  # noqa: E402
from reference.train_cnn import evaluate, evaluate_snn, restrict_mask_sites, to_tensor32  # noqa: E402
from reference.train_fashion import load_fashion  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2, 3):
        raise SystemExit("usage: eval_cnn_snn.py CHECKPOINT [N images] [DATA folder]")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ck = torch.load(argv[0], weights_only=True)
    c = ck["config"]
    cfg = CNNConfig(arch=c["arch"], in_chans=c.get("in_chans", 1), num_classes=c.get("num_classes", 10),
                    width=c["width"], qcfs_levels=c.get("qcfs_levels", 8), mask_ratio=c.get("mask_ratio", 0.0),
                    mask_rescale=c.get("mask_rescale", False), img_size=32)
    model = build(cfg)
    model.load_state_dict(ck["model"])
    restrict_mask_sites(model, cfg, c.get("mask_sites", "all"))
    n = int(argv[1]) if len(argv) > 1 else 200
    _, _, xte, yte = load_fashion(argv[2] if len(argv) > 2 else "/usr/share/datasets/fashion-mnist")
    x, y = to_tensor32(xte[:n].copy()), torch.as_tensor(yte[:n])
    print(f"{argv[0]}: {n} test images, p = {cfg.mask_ratio:g} at {c.get('mask_sites', 'all')}: "
          f"ANN {evaluate(model, x, y):.2f}%, SNN {evaluate_snn(model, x, y, 64)}")


if __name__ == "__main__":
    main()
