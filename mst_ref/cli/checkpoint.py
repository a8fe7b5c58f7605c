"""The checkpoint commands of ``mst-ref``: ``inspect`` and ``convert``.

Each is a function ``cmd_<name>(args) -> int`` (the exit status) taking an argparse namespace;
:func:`add_parsers` registers both on the ``add_subparsers()`` object of :mod:`mst_ref.cli`::

    mst-ref inspect CHECKPOINT [--img-size N] [--thresholds] [--json]
    mst-ref convert IN OUT [--force]        # IN: .pth/.pt/.npz/.safetensors; OUT: .npz or .safetensors

Neither prints a traceback for any input file: every failure is one line on stderr and exit status 2.
"""
import json
import os
import sys

from ..io.checkpoint import CheckpointError, convert_checkpoint, describe_checkpoint


def add_parsers(sub):
    """Add the ``inspect`` and ``convert`` subcommands to an argparse ``add_subparsers()`` object."""
    p = sub.add_parser("inspect", help="summarise a checkpoint: architecture, thresholds, config")
    p.add_argument("checkpoint", help=".pth / .pt / .pth.tar (torch.save), .npz (mst_ref) or .safetensors")
    p.add_argument("--img-size", type=int, default=None, help="input resolution, if the file does not say")
    p.add_argument("--thresholds", action="store_true", help="list every QCFS threshold (lambda)")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("convert", help="convert a checkpoint to .npz or .safetensors (no torch needed)")
    p.add_argument("input", help=".pth / .pt / .pth.tar, .npz or .safetensors")
    p.add_argument("output", help="OUT.npz (mst_ref's format) or OUT.safetensors")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(func=cmd_convert)


def _fail(command, err):
    if not isinstance(err, (CheckpointError, OSError)):     # a reader bug, not the file: say so, briefly
        err = f"{type(err).__name__}: {str(err)[:300]} (this is a bug in mst_ref; please report it)"
    print(f"mst-ref {command}: error: {err}", file=sys.stderr)
    return 2


def cmd_inspect(args):
    """Print what a checkpoint holds, read off its shapes (nothing from the file is executed)."""
    try:
        info = describe_checkpoint(args.checkpoint, img_size=getattr(args, "img_size", None))
    except Exception as err:        # noqa: BLE001 -- the CLI answers every file with one line, never a traceback
        return _fail("inspect", err)
    if getattr(args, "json", False):
        print(json.dumps(info, indent=1, default=str))
        return 0
    print(f"{info['path']}  ({info['format']})")
    print(f"  keys {info['num_keys']}, parameters {info['num_parameters']:,}, "
          f"dtypes {', '.join(f'{k} x{n}' for k, n in sorted(info['dtypes'].items()))}")
    arch = info["architecture"]
    if arch is None:
        what = "an MST" if info.get("family", "mst") == "mst" else "a QCFS ResNet-18 / VGG-16"
        print(f"  architecture: not {what} state dict ({info['architecture_error'].splitlines()[0]})")
    elif info.get("family", "mst") == "mst":
        print(f"  architecture: img {arch['img_size']}, patch {arch['patch_size']}, "
              f"in_chans {arch['in_chans']}, classes {arch['num_classes']}, embed_dim {arch['embed_dim']}, "
              f"depths {list(arch['depths'])}, heads {list(arch['num_heads'])}, "
              f"window {arch['window_size']}, mlp_ratio {arch['mlp_ratio']:g}")
    else:
        hidden = f", classifier hidden {arch['hidden']}" if arch["arch"] == "vgg16" else ""
        print(f"  architecture: QCFS {arch['arch']}, img {arch['img_size']}, in_chans {arch['in_chans']}, "
              f"classes {arch['num_classes']}, widths {list(arch['widths'])}{hidden} (width x{arch['width']:g}), "
              f"L = {arch['qcfs_levels']}")
    if info.get("family", "mst") == "mst":
        print(f"  MLP variant: {info['mlp_variant']}; trained mask ratio: {info['mask_ratio']}")
    else:
        print(f"  trained mask ratio: {info['mask_ratio']}")
    if info["problems"]:
        print(f"  problems ({len(info['problems'])}): " + "; ".join(info["problems"][:5]))
    values = sorted(info["thresholds"].values())
    if values:
        print(f"  QCFS thresholds (lambda): {len(values)} sites, min {values[0]:.4g}, "
              f"median {values[len(values) // 2]:.4g}, max {values[-1]:.4g}")
    if getattr(args, "thresholds", False):
        for site, lam in info["thresholds"].items():
            print(f"    {site:<48} {lam:.6g}")
    extra = {k: v for k, v in info["meta"].items() if isinstance(v, (int, float, str))}
    if extra:
        print("  " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    if info["config"] is not None:
        print(f"  config: {len(info['config'])} top-level entries (--json shows them)")
    return 0


def cmd_convert(args):
    """Convert IN to OUT (.npz or .safetensors, from OUT's suffix), keeping the config; OUT appears only
    once it is fully written and reads back the same (:func:`mst_ref.io.checkpoint.convert_checkpoint`)."""
    out = os.fspath(args.output)
    try:
        state, meta = convert_checkpoint(args.input, out, overwrite=getattr(args, "force", False))
    except Exception as err:        # noqa: BLE001 -- the CLI answers every file with one line, never a traceback
        return _fail("convert", err)
    print(f"wrote {out}: {len(state)} arrays" + (", with its config" if meta.get("config") else ""))
    return 0
