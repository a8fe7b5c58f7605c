"""Train a QCFS MST on simulated saccade recordings (N-MNIST .bin folders), voxel-grid input (PyTorch).

    python reference/train_events.py --data DIR --out runs/events/voxel --time-budget 2400

DIR is what ``mst-ref events make-saccades`` writes (DIR/train/<label>/*.bin, DIR/test/<label>/*.bin).
Each recording is read with ``mst_ref.read_events`` and turned into the MST authors' voxel grid
(``mst_ref.io.event_frames.voxel_input``: 9 time bins x 2 polarities = 18 channels, padded to a square
and resized to 28 x 28 by nearest neighbour); the grids are cached as ``cache_<split>.npz`` in the run
folder. The 18 channels enter the patch embedding directly (``in_chans = 18``: its convolution is the
channel alignment), so the checkpoint keeps the official layout. Counts are normalised by one mean and
standard deviation of the training grids (stored per channel in the config, as ``mst-ref eval`` reads
them). ``--coding frames`` trains the 2-channel model of the frame-per-step variant instead: its ANN
sees the mean of ``--bins`` frames.

Recipe: the shipped Fashion-MNIST recipe (reference/train_fashion.py) with a smaller model by default
(patch 4: 7 x 7 tokens, one stage of 4 blocks, embed 48, 3 heads, window 7), augmentation by random crop (pad 2) only -- a horizontal flip would also
mirror the saccade's direction. ``--init CHECKPOINT`` starts from a trained model's weights wherever names and shapes match: from
the static-image MST (data/mst_fashion.pth with the same patch size, depths and heads) every tensor
but the 18-channel patch embedding.
Resumable: ``state.pt`` after every epoch; rerun with the same --out.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from reference.mst_torch import MSTTorch, RefConfig  # noqa: E402
from reference.train_fashion import CLASSES  # noqa: E402


def load_split(data, split, coding, bins, img, out, limit=None):
    """(x (n, C, img, img) float32 counts, y (n,) int64), cached in the run folder."""
    cache = out / f"cache_{split}_{coding}{bins}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["x"], z["y"]
    from mst_ref.io.event_frames import frame_input, voxel_input
    from mst_ref.io.events import read_events
    files = sorted((Path(data) / split).glob("*/*.bin"), key=lambda f: f.name)  # by index: a prefix mixes classes
    if limit:
        files = files[:limit]
    xs, ys = [], []
    for k, f in enumerate(files):
        ev, sensor = read_events(f)
        if coding == "voxel":
            xs.append(voxel_input(ev, sensor, img, bins))
        else:
            xs.append(frame_input(ev, sensor, img, bins).mean(0))
        ys.append(int(f.parent.name))
        if k % 5000 == 0:
            print(f"{split}: {k}/{len(files)} recordings", flush=True)
    x, y = np.stack(xs).astype(np.float32), np.array(ys, np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def augment(x, gen, pad=2):
    """Random crop with ``pad``-pixel zero padding, every channel alike: (B, C, H, W)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    rows = (oy[:, None] + torch.arange(H))[:, None, :, None]             # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(W))[:, None, None, :]             # (B, 1, 1, W)
    return xp[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]


@torch.no_grad()
def evaluate(model, x, y, mean, std, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model((x[i:i + batch] - mean) / std).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--coding", default="voxel", choices=("voxel", "frames"))
    ap.add_argument("--bins", type=int, default=9)
    ap.add_argument("--epochs", default="auto")
    ap.add_argument("--time-budget", type=float, default=2400)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--embed-dim", type=int, default=48)
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--depths", default="4", help="blocks per stage, comma separated")
    ap.add_argument("--heads", default="3", help="heads per stage, comma separated")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default=None, help="start from this checkpoint.pth's weights where names and shapes match")
    args = ap.parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr = load_split(args.data, "train", args.coding, args.bins, 28, out, args.train_limit)
    xte, yte = load_split(args.data, "test", args.coding, args.bins, 28, out)
    C = xtr.shape[1]
    # one mean and standard deviation for every channel (counts of one kind)
    mean, std = float(xtr.mean()), float(xtr.std())
    xtr, ytr, xte, yte = map(torch.as_tensor, (xtr, ytr, xte, yte))
    print(f"train {tuple(xtr.shape)} test {tuple(xte.shape)} mean {mean:.4f} std {std:.4f}", flush=True)
    cfg = RefConfig(img_size=28, patch_size=args.patch, in_chans=C, num_classes=10, embed_dim=args.embed_dim,
                    depths=[int(d) for d in args.depths.split(",")], num_heads=[int(h) for h in args.heads.split(",")], window_size=7,
                    mlp_ratio=4.0, mlp_norm=False, qcfs_levels=args.levels)
    model = MSTTorch(cfg)
    n, steps = len(xtr), len(xtr) // args.batch
    decay = [p for n_, p in model.named_parameters() if p.ndim > 1 and "bias_table" not in n_]
    rest = [p for n_, p in model.named_parameters() if not (p.ndim > 1 and "bias_table" not in n_)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr)
    log = {"config": cfg.to_dict(), "args": vars(args), "epochs": []}
    epoch, total, max_acc = 0, None if args.epochs == "auto" else int(args.epochs), 0.0
    state_path = out / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch, total, max_acc, log = st["epoch"], st["total_epochs"], st["max_accuracy"], st["log"]
        print(f"resumed at epoch {epoch} of {total}", flush=True)
    elif args.init:
        # every tensor whose name and shape match (a static-image MST gives all but the 18-channel
        # patch embedding, which then starts from its random initialisation)
        src, own = torch.load(args.init, weights_only=True)["model"], model.state_dict()
        keep = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(keep, strict=False)
        skipped = sorted(set(own) - set(keep))
        print(f"initialised from {args.init}: {len(keep)} tensors, kept the new initialisation of "
              f"{skipped if skipped else 'none'}", flush=True)
    gen = torch.Generator()
    gen.manual_seed(args.seed + epoch)

    def lr_at(step, total_steps):
        warm = args.warmup * steps
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    while total is None or epoch < total:
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=gen)
        for s in range(steps):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps + s, (total or 1000) * steps)
            loss = F.cross_entropy(model((augment(xtr[idx], gen) - mean) / std), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(".up"):
                        p.clamp_(min=1e-3)
        epoch += 1
        acc = evaluate(model, xte, yte, mean, std)
        max_acc = max(max_acc, acc)
        dt = time.time() - t0
        if total is None:
            total = max(epoch + 1, epoch + int((args.time_budget - (time.time() - t_start) - 120) / dt))
        log["epochs"].append({"epoch": epoch, "test_acc": acc, "seconds": round(dt, 1)})
        print(f"epoch {epoch}/{total} acc {acc:.2f} ({dt:.1f}s)", flush=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "total_epochs": total, "max_accuracy": max_acc, "log": log}, state_path)
    final = evaluate(model, xte, yte, mean, std)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    conf = dict(cfg.to_dict(), mean=[mean] * C, std=[std] * C, dataset="fashion-mnist-saccades",
                class_names=CLASSES, event_coding=args.coding, event_bins=args.bins, sensor_size=[34, 34])
    torch.save({"model": sd, "config": conf, "epoch": epoch, "max_accuracy": max_acc}, out / "checkpoint.pth")
    log["final_ann_accuracy"] = final
    log["wall_seconds"] = round(time.time() - t_start, 1)
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps({"ann": final}), flush=True)


if __name__ == "__main__":
    main()
