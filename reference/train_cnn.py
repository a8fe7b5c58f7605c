"""Train the QCFS ResNet-18 / VGG-16 shipped with mst_ref on Fashion-MNIST (PyTorch; the `torch` extra).

    python reference/train_cnn.py --arch resnet18 --data /usr/share/datasets/fashion-mnist --out runs/resnet18
    python reference/train_cnn.py --arch resnet18 ... --out runs/resnet18_rsm75 --mask-ratio 0.75 \\
        --init runs/resnet18/checkpoint.pth --epochs 4

The official QCFS recipe (putshua/ANN_SNN_QCFS main_train.py: SGD with momentum 0.9, lr 0.1, weight
decay 5e-4 on every parameter thresholds included, cosine schedule, L = 8, thresholds initialised at
8.0, random crop with 4-pixel padding and horizontal flip, cross entropy) adapted to a small CPU budget:

- Fashion-MNIST, 1 channel, zero-padded from 28 to 32 pixels (VGG-16's five poolings need 32), then
  normalised with the dataset mean and std;
- channel counts scaled by ``--width`` (0.125 by default: ResNet-18 8/16/32/64 channels, VGG-16
  8 ... 64 channels and a 512-unit classifier), recorded in the checkpoint's config;
- tens of epochs instead of 300 (``--epochs``), one epoch of linear warm-up;
- with ``--mask-ratio p``: Random Spike Masking after the activation sites during training and test
  (the MST paper's CNN baselines; the official QCFS code has none): every site, or with
  ``--mask-sites NAME`` one of mst_ref's named configurations (mst_ref/models/cnn_sites.py:
  block-input, stage-input, ...), recorded in the checkpoint's config as ``mask_sites``; ``--init``
  starts from another run's checkpoint (how the shipped masked models were made: fine-tuned from the
  unmasked ones).

The run saves ``state.pt`` after every epoch and resumes from it when started again with the same
--out. At the end it writes ``checkpoint.pth`` = {'model': state_dict (official keys), 'config': dict
(arch, width, L, mask ratio, class names, normalisation), 'epoch', 'max_accuracy'}, ``train_log.json``,
and the SNN accuracy of the per-step reference on the first ``--snn-limit`` test images.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reference.qcfs_cnn_torch import CNNConfig, build  # noqa: E402
from reference.train_fashion import CLASSES, MEAN, STD, augment, load_fashion  # noqa: E402
from reference.qcfs_cnn_torch import IF  # noqa: E402


def to_tensor32(x_uint8):
    """(n, 28, 28) uint8 -> (n, 1, 32, 32) float in [0, 1], zero-padded by 2 pixels."""
    x = torch.as_tensor(x_uint8).float().div_(255.0).unsqueeze(1)
    return F.pad(x, (2, 2, 2, 2))


def restrict_mask_sites(model, cfg, name):
    """Keep RSM only at the sites of mst_ref's configuration ``name``; return their names.

    The twin's IF modules are named like mst_ref's sites (``conv2_x.0.act``, ``layer1.2``), so the
    configuration's site names select them directly.
    """
    from mst_ref.models.cnn_layout import CNNConfig as RefConfig
    from mst_ref.models.cnn_sites import cnn_mask_presets

    presets = cnn_mask_presets(RefConfig.official(cfg.arch, cfg.in_chans, cfg.img_size, cfg.num_classes, cfg.width))
    if name not in presets:
        raise SystemExit(f"--mask-sites must be one of {sorted(presets)} for {cfg.arch}; got {name!r}")
    sites = set(presets[name])
    ifs = {n: m for n, m in model.named_modules() if isinstance(m, IF)}
    if not sites <= set(ifs):
        raise SystemExit(f"sites {sorted(sites - set(ifs))} are not IF modules of the twin")
    for n, m in ifs.items():
        if n not in sites:
            m.mask_ratio = 0.0
    return [n for n in ifs if n in sites]


@torch.no_grad()
def evaluate(model, x, y, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model((x[i:i + batch] - MEAN) / STD).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


@torch.no_grad()
def evaluate_snn(model, x, y, T, batch=250):
    steps = [2 ** k for k in range(int(math.log2(T)) + 1)]
    correct = {t: 0 for t in steps}
    model.eval()
    for i in range(0, len(x), batch):
        cum = model.snn_forward((x[i:i + batch] - MEAN) / STD, T).cumsum(0)  # (T, B, K)
        for t in steps:
            correct[t] += (cum[t - 1].argmax(1) == y[i:i + batch]).sum().item()
    return {str(t): 100.0 * c / len(x) for t, c in correct.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=("resnet18", "vgg16"))
    ap.add_argument("--data", required=True, help="Fashion-MNIST IDX folder or .npz")
    ap.add_argument("--out", required=True, help="run folder (resumes from its state.pt)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up epochs (0 when fine-tuning)")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--mask-ratio", type=float, default=0.0)
    ap.add_argument("--mask-rescale", action="store_true", help="divide kept spikes by 1 - p (unbiased RSM)")
    ap.add_argument("--mask-sites", default="all",
                    help="which sites RSM masks: a configuration of mst_ref.models.cnn_sites (default all)")
    ap.add_argument("--init", default=None, help="start from this checkpoint.pth's weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-limit", type=int, default=None, help="first N images only (smoke tests)")
    ap.add_argument("--snn-T", type=int, default=64)
    ap.add_argument("--snn-limit", type=int, default=1000)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    cfg = CNNConfig(arch=args.arch, in_chans=1, num_classes=10, width=args.width, qcfs_levels=args.levels,
                    mask_ratio=args.mask_ratio, mask_rescale=args.mask_rescale, img_size=32)
    model = build(cfg)
    masked = restrict_mask_sites(model, cfg, args.mask_sites)
    xtr, ytr, xte, yte = load_fashion(args.data)
    if args.train_limit:
        xtr, ytr, xte, yte = xtr[:args.train_limit], ytr[:args.train_limit], xte[:args.train_limit], yte[:args.train_limit]
    xtr, xte = to_tensor32(xtr), to_tensor32(xte)
    ytr, yte = torch.as_tensor(ytr), torch.as_tensor(yte)
    n, steps_per_epoch = len(xtr), len(xtr) // args.batch

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    log = {"config": cfg.to_dict(), "args": vars(args), "epochs": []}
    epoch, max_acc = 0, 0.0
    state_path = out / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch, max_acc, log = st["epoch"], st["max_accuracy"], st["log"]
        print(f"resumed at epoch {epoch} of {args.epochs}", flush=True)
    elif args.init:
        model.load_state_dict(torch.load(args.init, weights_only=True)["model"])
        print(f"initialised from {args.init}", flush=True)
    gen = torch.Generator()
    gen.manual_seed(args.seed + epoch)
    total = args.epochs * steps_per_epoch

    def lr_at(step):
        warm = args.warmup * steps_per_epoch
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    while epoch < args.epochs:
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=gen)
        tot_loss, sampled = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb = (augment(xtr[idx], gen, pad=4) - MEAN) / STD
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + s)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # thresholds stay positive
                for name, p in model.named_parameters():
                    if name.endswith(".thresh"):
                        p.clamp_(min=1e-3)
            if s % 50 == 0:
                tot_loss, sampled = tot_loss + loss.item(), sampled + 1
        epoch += 1
        acc = evaluate(model, xte, yte)
        max_acc = max(max_acc, acc)
        dt = time.time() - t0
        log["epochs"].append({"epoch": epoch, "test_acc": acc, "seconds": round(dt, 1),
                              "loss_sampled": round(tot_loss / max(1, sampled), 4)})
        print(f"epoch {epoch}/{args.epochs} acc {acc:.2f} ({dt:.1f}s)", flush=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "max_accuracy": max_acc, "log": log}, state_path)

    final_acc = evaluate(model, xte, yte)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    conf = dict(cfg.to_dict(), mean=[MEAN], std=[STD], dataset="fashion-mnist", pad=2, class_names=CLASSES)
    if args.mask_ratio > 0:
        conf["mask_sites"] = args.mask_sites
        log["masked_sites"] = masked
    torch.save({"model": sd, "config": conf, "epoch": epoch, "max_accuracy": max_acc}, out / "checkpoint.pth")
    log["final_ann_accuracy"] = final_acc
    lim = args.snn_limit
    log["snn_accuracy_torch_reference"] = {"images": lim, "acc": evaluate_snn(model, xte[:lim], yte[:lim], args.snn_T)}
    log["wall_seconds"] = round(time.time() - t_start, 1)
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps({"ann": final_acc, "snn": log["snn_accuracy_torch_reference"]}), flush=True)


if __name__ == "__main__":
    main()
