"""Train the QCFS MST shipped with mst_ref on Fashion-MNIST (PyTorch; the `torch` extra).

    python reference/train_fashion.py --data /usr/share/datasets/fashion-mnist --out runs/plain
    python reference/train_fashion.py --data ... --out runs/rsm75 --mask-ratio 0.75

Recipe (chosen to train in minutes on a GPU and in about two hours on two CPU cores):
img 28, patch 2 (14 x 14 tokens), embed 48, depths [2, 2], heads [3, 6], window 7 (stage 1 has a
7 x 7 grid, so its windows cover it and are unshifted), MLP ratio 4, no MLP BatchNorm (the CIFAR
variant), QCFS with L = 8 levels and learnable thresholds (straight-through floor), AdamW, cosine
schedule with warm-up, label smoothing 0.1, random crop (pad 2) and horizontal flip.
With --mask-ratio p, RSM masks q, k and attention-score spikes during training and evaluation, as
the published code does.

The run saves `state.pt` after every epoch (model, optimiser, epoch, schedule) and resumes from it
when started again with the same --out, so it can run in the background across sessions.
`--epochs auto --time-budget S` fixes the number of epochs after the first one so that the whole
run fits in S seconds. At the end it writes the official-format checkpoint
{'model': state_dict, 'config': dict, 'epoch', 'max_accuracy'} as `checkpoint.pth`, a JSON log,
and the SNN accuracy at T = 1, 2, 4, ..., 128 measured with the per-step PyTorch reference.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reference.mst_torch import MSTTorch, RefConfig  # noqa: E402

MEAN, STD = 0.2860, 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(path):
    """(x_train, y_train, x_test, y_test) as uint8 / int64 arrays from an IDX folder or an .npz."""
    path = Path(path)
    if path.suffix == ".npz":
        d = np.load(path)
        return d["x_train"], d["y_train"].astype(np.int64), d["x_test"], d["y_test"].astype(np.int64)

    def find(stem):
        for name in (stem + ".gz", stem):
            if (path / name).exists():
                return path / name
        raise FileNotFoundError(f"{stem}(.gz) not found in {path}")
    return (read_idx(find("train-images-idx3-ubyte")), read_idx(find("train-labels-idx1-ubyte")).astype(np.int64),
            read_idx(find("t10k-images-idx3-ubyte")), read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64))


def normalise(x_uint8, device):
    x = torch.as_tensor(x_uint8, device=device).float().div_(255.0)
    return x.unsqueeze(1)                                                  # (n, 1, 28, 28) in [0, 1]


def augment(x, gen, pad=2):
    """Random crop with ``pad``-pixel zero padding and horizontal flip, on raw [0, 1] images."""
    B, _, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]   # (B, H, 1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]   # (B, 1, W)
    out = xp[torch.arange(B, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(B, device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = (x[i:i + batch] - MEAN) / STD
        correct += (model(xb).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


@torch.no_grad()
def evaluate_snn(model, x, y, T=128, batch=1000):
    """Accuracy at T = 1, 2, 4, ..., T of the published per-step SNN (cumulative read-out)."""
    steps = [2 ** k for k in range(int(math.log2(T)) + 1)]
    correct = {t: 0 for t in steps}
    for i in range(0, len(x), batch):
        cum = model.snn_forward((x[i:i + batch] - MEAN) / STD, T)           # (T, B, K)
        for t in steps:
            correct[t] += (cum[t - 1].argmax(1) == y[i:i + batch]).sum().item()
    return {str(t): 100.0 * c / len(x) for t, c in correct.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="Fashion-MNIST IDX folder or .npz")
    ap.add_argument("--out", required=True, help="run folder (resumes from its state.pt)")
    ap.add_argument("--epochs", default="40", help="number of epochs, or 'auto' with --time-budget")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds for the whole run")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up epochs")
    ap.add_argument("--mask-ratio", type=float, default=0.0)
    ap.add_argument("--mask-sites", default="published", choices=("published", "paper"),
                    help="paper: also mask the MLP input spikes (shortcut2_if)")
    ap.add_argument("--init", default=None, help="start from this checkpoint.pth's weights (fine-tuning)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--embed-dim", type=int, default=48)
    ap.add_argument("--heads", default="3,6", help="heads per stage, comma separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (smoke tests)")
    ap.add_argument("--snn-T", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False     # keep float32 numerics for the QCFS floors
        torch.backends.cudnn.allow_tf32 = False

    cfg = RefConfig(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=args.embed_dim,
                    depths=[2, 2], num_heads=[int(h) for h in args.heads.split(",")], window_size=7, mlp_ratio=4.0, mlp_norm=False,
                    qcfs_levels=args.levels, mask_ratio=args.mask_ratio, mask_sites=args.mask_sites)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = MSTTorch(cfg).to(dev)
    if args.init and not (out / "state.pt").exists():
        model.load_state_dict(torch.load(args.init, map_location=dev, weights_only=True)["model"])
        print(f"initialised from {args.init}", flush=True)
    xtr, ytr, xte, yte = load_fashion(args.data)
    if args.train_limit:
        xtr, ytr, xte, yte = xtr[:args.train_limit], ytr[:args.train_limit], xte[:args.train_limit], yte[:args.train_limit]
    xtr, xte = normalise(xtr, dev), normalise(xte, dev)
    ytr, yte = torch.as_tensor(ytr, device=dev), torch.as_tensor(yte, device=dev)
    n, steps_per_epoch = len(xtr), len(xtr) // args.batch

    decay = [p for n_, p in model.named_parameters() if p.ndim > 1 and "bias_table" not in n_]
    no_decay = [p for n_, p in model.named_parameters() if not (p.ndim > 1 and "bias_table" not in n_)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    log = {"config": cfg.to_dict(), "args": vars(args), "epochs": []}
    epoch, total_epochs, max_acc = 0, None if args.epochs == "auto" else int(args.epochs), 0.0
    state_path = out / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location=dev, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch, total_epochs, max_acc, log = st["epoch"], st["total_epochs"], st["max_accuracy"], st["log"]
        print(f"resumed at epoch {epoch} of {total_epochs}", flush=True)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed + epoch)

    def lr_at(step, total):
        warm = args.warmup * steps_per_epoch
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    while total_epochs is None or epoch < total_epochs:
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, device=dev, generator=gen)
        tot_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            xb = (augment(xtr[idx], gen) - MEAN) / STD
            est_total = (total_epochs or 1000) * steps_per_epoch
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + s, est_total)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():                  # thresholds stay positive
                for name, p in model.named_parameters():
                    if name.endswith(".up"):
                        p.clamp_(min=1e-3)
            tot_loss += loss.item() if s % 50 == 0 else 0.0
        epoch += 1
        acc = evaluate(model, xte, yte)
        max_acc = max(max_acc, acc)
        dt = time.time() - t0
        if total_epochs is None:
            budget = (args.time_budget or 3600) - (time.time() - t_start) - 60
            total_epochs = max(epoch + 1, epoch + int(budget / dt))
        log["epochs"].append({"epoch": epoch, "test_acc": acc, "seconds": round(dt, 1),
                              "loss_sampled": round(tot_loss / max(1, steps_per_epoch // 50), 4)})
        print(f"epoch {epoch}/{total_epochs} acc {acc:.2f} ({dt:.1f}s)", flush=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "total_epochs": total_epochs, "max_accuracy": max_acc, "log": log}, state_path)
        if args.time_budget and time.time() - t_start > args.time_budget - 30:
            print("time budget reached; stopping (resume by running again)", flush=True)
            break

    final_acc = evaluate(model, xte, yte)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    conf = dict(cfg.to_dict(), mean=[MEAN], std=[STD], dataset="fashion-mnist", class_names=CLASSES)
    torch.save({"model": sd, "config": conf, "epoch": epoch, "max_accuracy": max_acc}, out / "checkpoint.pth")
    log["final_ann_accuracy"] = final_acc
    log["snn_accuracy_torch_reference"] = evaluate_snn(model, xte, yte, args.snn_T)
    log["wall_seconds"] = round(time.time() - t_start, 1)
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps({"ann": final_acc, "snn": log["snn_accuracy_torch_reference"]}), flush=True)


if __name__ == "__main__":
    main()
