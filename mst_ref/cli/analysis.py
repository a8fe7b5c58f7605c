"""The ``mst-ref analyze`` command: where, and why, the SNN departs from its ANN.

:func:`add_analyze_parser` registers it on the ``add_subparsers()`` object of :mod:`mst_ref.cli`::

    mst-ref analyze CHECKPOINT [--data PATH] [--timesteps 1,2,4,...,64] [--limit N] [--batch-size B]
                    [--compensation none|expectation|both] [--mask-ratio P] [--seed S]
                    [--reference qcfs|clip] [--sites PATTERN ...] [--commutation] [--curve] [--out DIR]

Without ``--curve``: the per-site table of :func:`mst_ref.analysis.site_errors` (sites x T, mean
|SNN rate x lambda - ANN activation|), the error parts at the largest T, and a heat map
``site_errors_<compensation>.png``; ``--commutation`` adds :func:`mst_ref.analysis.commutation_check`.
With ``--curve``: accuracy vs T of the faithful and the compensated SNN side by side, the ANN
accuracies for reference, and ``accuracy_vs_T.png``. Tables go to stdout, progress to stderr.
"""

import sys
import time

import numpy as np

from ..analysis.site_errors import PARTS, commutation_check, op_kind, site_errors
from .common import (UsageError, at_least, check_output_dir, load_data, load_model, note_compiling,
                         override_normalisation, ratio)
from .common import parse_timesteps as common_timesteps
from ..io.data import prepare_images, sample_path
from ..plots import heatmap_png, line_chart_png

__all__ = ["add_analyze_parser", "cmd_analyze", "parse_timesteps"]

_LABELS = {"none": "faithful", "expectation": "compensated"}


def parse_timesteps(text):
    """The T values of ``--timesteps``, as every command reads them (:func:`mst_ref.cli.common.parse_timesteps`)."""
    return tuple(common_timesteps(text))


def add_analyze_parser(subparsers):
    """Add the ``analyze`` subcommand to an argparse ``add_subparsers()`` object."""
    p = subparsers.add_parser("analyze", help="per-site ANN vs SNN errors, commutation, accuracy vs T")
    p.add_argument("checkpoint", help=".pth / .pt (torch.save), .npz (mst_ref) or .safetensors")
    p.add_argument("--data", default=None, help="dataset path (default: the shipped Fashion-MNIST sample)")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="part of an IDX / CIFAR / image folder (an .npz holds one set: test)")
    p.add_argument("--timesteps", default="1,2,4,...,32",
                   help="T values, increasing, comma-separated; 'a,b,c,...,z' continues the doubling or the "
                        "step shown by a,b,c up to z (default 1,2,4,...,32)")
    p.add_argument("--limit", type=int, default=32, help="number of images (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="images per SNN run (default 8)")
    p.add_argument("--compensation", choices=["none", "expectation", "both"], default=None,
                   help="SNN analysed (default: none; --curve: both)")
    p.add_argument("--mask-ratio", type=float, default=None, help="RSM ratio (default: the trained one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    p.add_argument("--reference", choices=["qcfs", "clip"], default="qcfs",
                   help="ANN the sites are compared with: QCFS (trained) or clip (the compensated limit)")
    p.add_argument("--sites", nargs="+", default=None, help="site names or glob patterns (default: all)")
    p.add_argument("--commutation", action="store_true", help="also check the analog ops at the largest T")
    p.add_argument("--curve", action="store_true", help="accuracy vs T, faithful and compensated, instead")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution, if the checkpoint does not say")
    p.add_argument("--mean", default=None, help="per-channel mean, comma-separated (default: the checkpoint's)")
    p.add_argument("--std", default=None, help="per-channel std, comma-separated (default: the checkpoint's)")
    p.add_argument("--resize", action="store_true",
                   help="convert images of another size or channel count to the model's input (else an error)")
    p.add_argument("--out", default="mst_ref_analysis", help="folder for the PNGs (default mst_ref_analysis)")
    p.set_defaults(func=cmd_analyze)
    return p


def _progress(label):
    start = time.perf_counter()

    def report(done, total):
        print(f"analyze: {label}: {done}/{total} images, {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
    return report


def _inputs(args, loaded):
    """Normalised images and labels: --data (default: the shipped sample), mean/std from the checkpoint."""
    dataset, notes = load_data(args.data or sample_path(), loaded, args.split, args.resize, args.limit)
    for line in notes:
        print(line, file=sys.stderr)
    n = min(args.limit, len(dataset))
    c = loaded.model.config
    return (prepare_images(dataset.images[:n], c.img_size, c.in_chans, loaded.mean, loaded.std, args.resize),
            dataset.labels[:n])


def _fmt(v):
    return f"{v:>9.3g}" if np.isfinite(v) else f"{'-':>9}"


def _print_site_table(se, width):
    ref = f"QCFS ANN (L={se.levels})" if se.quantize else "clip ANN"
    print(f"\nper-site mean |SNN rate x lambda - ANN activation|: {_LABELS[se.compensation]} SNN vs {ref}, "
          f"{se.num_images} images")
    print(f"{'site':<{width}} {'lambda':>9}" + "".join(f"{'T=' + str(t):>9}" for t in se.timesteps))
    for i, name in enumerate(se.sites):
        print(f"{name:<{width}} {_fmt(se.thresholds[i])}" + "".join(_fmt(v) for v in se.mean_abs_error[i]))
    print(f"{'logits: relative error':<{width}} {'':>9}" + "".join(_fmt(v) for v in se.logit_error))
    if se.accuracy is not None:
        print(f"{'accuracy (ANN ' + format(100 * se.ann_accuracy, '.1f') + '%)':<{width}} {'':>9}"
              + "".join(f"{100 * a:>8.1f}%" for a in se.accuracy))
    T = se.timesteps[-1]
    print(f"\nerror parts at T={T} (mean |part|; the signed parts add up to the error):")
    print("  uneven = r - qcfs_T(mean input)   time_q = qcfs_T - clip of the mean input")
    print("  propag = clip(mean SNN input) - clip(ANN input)   ann_q = clip(ANN input) - QCFS (0 for clip)")
    print("  input = mean |mean SNN input - ANN input|   >lam, <0 = fractions of the ANN input clipped")
    cols = ("error", "uneven", "time_q", "propag", "ann_q", "input", "rel", "corr", ">lam", "<0")
    print(f"{'site':<{width}}" + "".join(f"{c:>9}" for c in cols))
    parts = se.parts(-1)
    for i, name in enumerate(se.sites):
        row = [se.mean_abs_error[i, -1], *(parts[p][i] for p in PARTS), se.input_error[i, -1],
               se.relative_error[i, -1], se.correlation[i, -1], se.clip_above[i], se.clip_below[i]]
        print(f"{name:<{width}}" + "".join(_fmt(v) for v in row))


def _site_mode(args, model, x, y, stops, comps, p, out):
    width = max(len(s) for s in model.site_names) + 1
    for comp in comps:
        se = site_errors(model, x, stops, comp, p, np.random.default_rng(args.seed), sites=args.sites,
                         labels=y, quantize=args.reference == "qcfs", batch_size=args.batch_size,
                         progress=_progress(f"sites, {_LABELS[comp]} SNN"))
        _print_site_table(se, width)
        path = heatmap_png(out / f"site_errors_{comp}.png", se.mean_abs_error / se.thresholds[:, None],
                           se.sites, [str(t) for t in stops],
                           f"Per-site error of the {_LABELS[comp]} SNN vs the {args.reference} ANN, "
                           f"{se.num_images} images", xlabel="time steps T",
                           ylabel="activation site (forward order)",
                           colorbar_label="mean |SNN rate x lambda - ANN| / lambda (fraction of lambda)")
        print(f"wrote {path}")
        if args.commutation:
            print(f"\ncommutation with the mean over time, {_LABELS[comp]} SNN, T={stops[-1]}: "
                  "||mean_t f(x_t) - f(mean_t x_t)|| / ||f(mean_t x_t)||")
            cc = commutation_check(model, x, stops[-1], comp, p, np.random.default_rng(args.seed),
                                   batch_size=args.batch_size)
            for op, err in cc.items():
                print(f"{op:<{width}} {op_kind(op):<11} {err:>10.3e}")


def _curve_mode(args, model, x, y, stops, comps, p, out):
    rng = np.random.default_rng(args.seed)
    ann_qcfs = model.ann_forward(x, mask_ratio=p, rng=rng).argmax(-1)  # (n,)
    ann_clip_logits = model.ann_forward(x, quantize=False, mask_ratio=p, rng=rng)  # (n, K)
    acc = {"ANN (QCFS)": np.mean(ann_qcfs == y), "ANN (clip)": np.mean(ann_clip_logits.argmax(-1) == y)}
    curves, errors = {}, {}
    for comp in comps:
        report = _progress(f"curve, {_LABELS[comp]} SNN")
        correct, sq = np.zeros(len(stops)), np.zeros(len(stops))
        for start in range(0, len(x), args.batch_size):
            xb, stop = x[start:start + args.batch_size], min(start + args.batch_size, len(x))
            r = model.snn_forward(xb, stops[-1], mask_ratio=p, rng=rng, compensation=comp)
            for c, T in enumerate(stops):
                correct[c] += np.count_nonzero(r.predictions[T - 1] == y[start:stop])
                sq[c] += ((r.mean_logits[T - 1] - ann_clip_logits[start:stop]) ** 2).sum()
            report(stop, len(x))
        curves[_LABELS[comp]] = correct / len(x)
        errors[_LABELS[comp]] = np.sqrt(sq / (ann_clip_logits**2).sum())
    print(f"\naccuracy vs T on {len(x)} images ({args.checkpoint}, mask ratio {p:g}, seed {args.seed})")
    print(f"ANN with QCFS (L={model.config.qcfs_levels}): {100 * acc['ANN (QCFS)']:.1f}%   "
          f"ANN with clip (the compensated SNN's limit): {100 * acc['ANN (clip)']:.1f}%")
    names = list(curves)
    print(f"{'T':>6}" + "".join(f"{n + ' acc':>18}" for n in names)
          + "".join(f"{n + ' logit err':>24}" for n in names))
    for c, T in enumerate(stops):
        print(f"{T:>6}" + "".join(f"{100 * curves[n][c]:>17.1f}%" for n in names)
              + "".join(f"{errors[n][c]:>24.4f}" for n in names))
    print("(logit err: ||mean SNN logits - clip-ANN logits|| / ||clip-ANN logits||)")
    series = {f"{n} SNN": 100 * curves[n] for n in names}
    series |= {k: np.full(len(stops), 100 * v) for k, v in acc.items()}
    path = line_chart_png(out / "accuracy_vs_T.png", list(stops), series,
                          f"Accuracy vs T of the faithful and compensated SNN, {len(x)} images",
                          "time steps T (log scale)", "accuracy (%)", logx=True, dashed=set(acc))
    print(f"wrote {path}")


def cmd_analyze(args):
    """Per-site error table and heat map, or (``--curve``) accuracy vs T; returns the exit status."""
    stops = parse_timesteps(args.timesteps)
    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.limit, 1, "--limit")
    ratio(args.mask_ratio, "--mask-ratio")
    out = check_output_dir(args.out, "--out")  # before any work: a long run must not end in a failed write
    loaded = override_normalisation(load_model(args.checkpoint, img_size=args.img_size), args.mean, args.std)
    model = loaded.model
    if args.commutation and not hasattr(model.config, "stages"):
        raise UsageError("--commutation checks the MST's analog ops (window attention, LayerNorm); this "
                         "model has none")
    x, y = _inputs(args, loaded)
    p = float(getattr(model.config, "mask_ratio", 0.0) or 0.0) if args.mask_ratio is None else args.mask_ratio
    comp = args.compensation or ("both" if args.curve else "none")
    comps = ["none", "expectation"] if comp == "both" else [comp]
    print(f"{args.checkpoint}: {len(model.site_names)} sites, L={model.config.qcfs_levels}; "
          f"{len(x)} images from {args.data or sample_path()}; T = {', '.join(map(str, stops))}; "
          f"mask ratio {p:g}")
    note_compiling()
    if args.curve:
        _curve_mode(args, model, x, y, stops, comps, p, out)
    else:
        _site_mode(args, model, x, y, stops, comps, p, out)
    return 0
