"""What every ``mst-ref`` command shares: one grammar for its arguments, one way to fail, one progress bar.

The commands (:mod:`mst_ref.cli.run`, :mod:`mst_ref.cli.energy`, :mod:`mst_ref.cli.analysis`, ...)
parse their arguments with the helpers here, so that a flag means the same in every command:

- ``--timesteps``: :func:`parse_timesteps`, integers separated by commas, increasing, with ``...``
  continuing a pattern shown by the three values before it (``1,2,4,...,128`` doubles, ``8,16,24,...,64``
  steps by 8). A command that runs at one T takes one value in the same grammar.
- ``--mean`` / ``--std``, ``--ratios``: :func:`parse_floats`.
- output paths (``--json``, ``--out``): checked by :func:`check_output_file` / :func:`check_output_dir`
  before any work starts, so a long run never ends in a failed write.

Failures: a command raises :class:`UsageError` (or the library's ``ValueError`` / ``OSError``
subclasses: ``DataError``, ``CheckpointError``, ``FileNotFoundError``); :func:`run_command` turns it
into one line on stderr, ``mst-ref COMMAND: error: ...``, and exit status 2. Anything else is a bug:
one line saying so and where to report it, exit status 2 (``MST_REF_DEBUG=1`` shows the traceback).

Models: :func:`load_model` returns the model with what the checkpoint's config says about its inputs
(normalisation, class names). Only these fields of the model are used, so any model that
``mst_ref.load_checkpoint`` returns works: ``config.img_size``, ``config.in_chans``,
``config.num_classes``, ``ann_forward``, ``snn_forward``, ``site_names``; MST-only pictures check for
their fields first.
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import data

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
REPORT_HINT = ("this is a bug in mst_ref, not in your input: please report it on the project's issue "
               "tracker with the command line and this message (MST_REF_DEBUG=1 shows the traceback)")


class UsageError(ValueError):
    """A command-line argument or a combination of them that cannot be honoured."""


# ---------------------------------------------------------------- argument grammar
def parse_timesteps(text, flag="--timesteps", single=False):
    """T values from ``"1,2,4"``; ``a,b,c,...,z`` continues the doubling (any integer ratio) or the
    constant step shown by a, b, c, up to z, which is always included.

    Parameters
    ----------
    text : str
    flag : str, the option's name, for messages
    single : bool, the command runs at one T: exactly one value is accepted

    Returns
    -------
    list of int, increasing, each >= 1

    Examples: ``"1,2,4,...,128"`` -> 1, 2, 4, ..., 128; ``"8,16,24,...,64"`` -> 8, 16, ..., 64;
    ``"1,2,4,...,50"`` -> 1, 2, 4, 8, 16, 32, 50. Values must increase: ``"8,4"`` is an error, not
    silently sorted.
    """
    example = "e.g. 32" if single else "e.g. 1,2,4 or 1,2,4,...,128"
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if "..." in parts:
            i = parts.index("...")
            values, last = [int(p) for p in parts[:i]], int(parts[i + 1])
            if i != len(parts) - 2 or parts.count("...") != 1:
                raise UsageError(f"{flag}: '...' must be followed by one last value, e.g. 1,2,4,...,128; "
                                 f"got {text!r}")
            if i < 3:
                raise UsageError(f"{flag}: '...' needs the three values before it to show the pattern, "
                                 f"e.g. 1,2,4,...,128 (doubling) or 8,16,24,...,64 (step 8); got {text!r}")
            a, b, c = values[-3:]
            if 0 < a < b < c and b - a == c - b:
                step = lambda v: v + (b - a)  # noqa: E731
            elif 0 < a < b < c and b % a == 0 and c == b * (b // a):
                step = lambda v: v * (b // a)  # noqa: E731
            else:
                raise UsageError(f"{flag}: {a},{b},{c} before '...' is neither a constant step nor a constant "
                                 f"integer ratio; got {text!r}")
            if last < c:
                raise UsageError(f"{flag}: the value after '...' ({last}) must be at least {c}; got {text!r}")
            while step(values[-1]) < last:
                values.append(step(values[-1]))
            if values[-1] != last:
                values.append(last)
        else:
            values = [int(p) for p in parts]
    except (ValueError, IndexError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"{flag} must be integers separated by commas, {example}; got {text!r}") from None
    if min(values) < 1:
        raise UsageError(f"{flag} values must be >= 1; got {text!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise UsageError(f"{flag} values must increase, each once, {example}; got {text!r}")
    if single and len(values) != 1:
        raise UsageError(f"{flag}: this command runs at one T; give one value, {example}; got {text!r} "
                         f"({len(values)} values)")
    return values


def parse_floats(text, flag, count=None):
    """Numbers separated by commas (``"0.5"``, ``"0.485,0.456,0.406"``); ``count``: how many are allowed
    (an int, or a tuple of ints)."""
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406; "
                         f"got {text!r}") from None
    allowed = (count,) if isinstance(count, int) else count
    if allowed is not None and len(values) not in allowed:
        want = " or ".join(str(n) for n in sorted(set(allowed)))
        raise UsageError(f"{flag} needs {want} value{'s' if max(allowed) > 1 else ''}; got {len(values)} "
                         f"({text!r})")
    return values


def at_least(value, minimum, flag):
    """``value`` if it is an integer >= ``minimum``, else UsageError naming ``flag``."""
    if value is None or value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}; got {value}")
    return value


def ratio(value, flag):
    """``value`` if it is a masking ratio in [0, 1], else UsageError."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise UsageError(f"{flag} must be in [0, 1]; got {value}")
    return value



def add_neuron_arguments(p):
    """``--neuron`` and ``--burst-max``: the SNN's neuron (:data:`mst_ref.core.neurons.NEURONS`)."""
    from ..core.neurons import NEURONS
    p.add_argument("--neuron", choices=NEURONS, default="if",
                   help="SNN neuron: if (published), signed (negative spikes take back over-firing), burst "
                        "(up to --burst-max spikes of lambda/K per step), signed-burst (default if)")
    p.add_argument("--burst-max", type=int, default=None, metavar="K",
                   help="burst neurons: spikes per step (default L, the model's QCFS levels)")


def neuron_options(args):
    """``dict(neuron=..., burst_max=...)`` of ``args`` for ``snn_forward``; UsageError for a bad pair."""
    if args.burst_max is not None:
        at_least(args.burst_max, 1, "--burst-max")
        if "burst" not in args.neuron:
            raise UsageError(f"--burst-max applies to --neuron burst or signed-burst; got --neuron {args.neuron}")
    return {"neuron": args.neuron, "burst_max": args.burst_max}


def neuron_label(options, levels):
    """``"burst (K=8 spikes per step)"``: the neuron of a run, for the commands' headers."""
    if options["neuron"] in ("if", "signed"):
        return options["neuron"] + (" (published)" if options["neuron"] == "if" else " (one spike of +-lambda per step)")
    K = levels if options["burst_max"] is None else options["burst_max"]
    return f"{options['neuron']} (up to K={K} spikes of lambda/K per step)"


def add_distributed_arguments(p):
    """``--workers`` / ``--scheduler`` / ``--shard-size`` / ``--cache``: a sharded run (mst_ref.cli.sharded)."""
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="evaluate in N local processes (shards of images; same results as one process)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="evaluate on a running Dask cluster, e.g. tcp://host:8786 (needs mst_ref[distributed])")
    p.add_argument("--shard-size", type=int, default=None, metavar="K",
                   help="images per shard, a multiple of --batch-size (default: about 4 shards per worker)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep finished shards in DIR; a rerun of the same command resumes from them")

# ---------------------------------------------------------------- output paths, checked up front
def check_output_file(path, flag):
    """Make sure a file can be written at ``path`` before any work starts; return it as a Path.

    Creates missing parent folders. An existing file is replaced at the end; a folder, or a place
    that cannot be written, is an error now.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'results.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as err:
        raise UsageError(f"{flag} {path} cannot be written: {err.strerror or err}") from None
    return path


def check_output_dir(path, flag):
    """Make sure ``path`` is (or can be made) a writable folder before any work starts; return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; give a folder for the pictures")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path} is not a writable folder: {err.strerror or err}") from None
    return path


# ---------------------------------------------------------------- models and data
@dataclass
class LoadedModel:
    """A checkpoint's model and what its config says about the inputs it expects."""

    model: object
    mean: tuple
    std: tuple
    norm_source: str  # where mean / std came from, for the run's header
    class_names: list = None  # from the config's ``class_names``; None: the checkpoint does not say
    config: dict = field(default_factory=dict)  # the checkpoint's config entry, {} if none


def load_model(path, img_size=None):
    """Load a checkpoint; normalisation and class names from its config, with documented defaults.

    Normalisation: the config's ``mean`` / ``std`` when it has them (the shipped models do), else
    Fashion-MNIST's (0.2860 / 0.3530) for a 1-channel model and ImageNet's ((0.485, 0.456, 0.406) /
    (0.229, 0.224, 0.225), the timm / torchvision convention) for a 3-channel one.
    """
    from ..io.checkpoint import load_checkpoint, load_state_dict

    if not Path(path).exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if Path(path).is_dir():
        raise UsageError(f"checkpoint {path} is a folder; give a .pth, .npz or .safetensors file")
    model = load_checkpoint(path) if img_size is None else load_checkpoint(path, img_size=img_size)
    config = load_state_dict(path)[1].get("config")
    config = config if isinstance(config, dict) else {}
    names = config.get("class_names")
    names = [str(n) for n in names] if isinstance(names, (list, tuple)) and names else None
    if names is not None and len(names) != model.config.num_classes:
        raise UsageError(f"{path}: its config lists {len(names)} class_names but the model has "
                         f"{model.config.num_classes} classes")
    if config.get("mean") is not None and config.get("std") is not None:
        mean, std, where = tuple(config["mean"]), tuple(config["std"]), "the checkpoint's config"
    elif model.config.in_chans == 1:
        mean, std, where = data.FASHION_MNIST_MEAN, data.FASHION_MNIST_STD, "Fashion-MNIST default (1 channel)"
    else:
        mean, std, where = IMAGENET_MEAN, IMAGENET_STD, "ImageNet default (3 channels)"
    return LoadedModel(model, mean, std, where, names, config)


def override_normalisation(loaded, mean_text, std_text):
    """Apply ``--mean`` / ``--std`` (1 value, or one per input channel) to a :class:`LoadedModel`."""
    if mean_text is None and std_text is None:
        return loaded
    c = loaded.model.config.in_chans
    count = (1,) if c == 1 else (1, c)
    if mean_text is not None:
        loaded.mean = tuple(parse_floats(mean_text, "--mean", count))
    if std_text is not None:
        loaded.std = tuple(parse_floats(std_text, "--std", count))
        if min(loaded.std) <= 0:
            raise UsageError(f"--std values must be > 0; got {std_text!r}")
    loaded.norm_source = "--mean / --std"
    return loaded


def padding_of(loaded):
    """Zero padding (pixels per side) the checkpoint's config records for its training images (``pad``), or 0."""
    pad = loaded.config.get("pad", 0) if isinstance(loaded.config, dict) else 0
    return pad if type(pad) is int and 0 < pad <= 64 else 0


def load_data(path, loaded, split="test", resize=False, limit=None):
    """Load a dataset for ``loaded.model``; return it and the notes the command should print.

    Folder labels come from the model's class names. Images of another size or channel count are an
    error unless ``resize``; then a note says what is done to them. Labels the model cannot output are
    an error.
    """
    dataset = data.load_dataset(path, split, class_names=loaded.class_names)
    cfg, notes = loaded.model.config, []
    if dataset.label_note:
        notes.append(f"note: {dataset.label_note}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    top = int(dataset.labels[:n].max(initial=0))
    if top >= cfg.num_classes:
        raise UsageError(f"{path} has labels up to {top} but the checkpoint has {cfg.num_classes} classes: "
                         "is this the dataset it was trained on?")
    h, w, c = dataset.images.shape[1:]
    pad = padding_of(loaded)
    if pad and (h + 2 * pad, w + 2 * pad, c) == (cfg.img_size, cfg.img_size, cfg.in_chans):
        # the model was trained on images zero-padded by `pad` pixels (its config says so): pad the same way
        n_pad = len(dataset) if limit is None else min(limit, len(dataset))
        images = np.pad(dataset.images[:n_pad], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        dataset = data.Dataset(images, dataset.labels[:n_pad], dataset.classes, dataset.name, dataset.label_note)
        notes.append(f"note: images zero-padded by {pad} pixels to {cfg.img_size} x {cfg.img_size}, as the "
                     "checkpoint's config says the model was trained")
        h, w = h + 2 * pad, w + 2 * pad
    if (h, w, c) != (cfg.img_size, cfg.img_size, cfg.in_chans):
        what = data.describe_conversion((h, w, c), cfg.img_size, cfg.in_chans)
        if not resize:
            raise UsageError(f"{path} holds {c}-channel {h} x {w} images but the model takes {cfg.in_chans}-"
                             f"channel {cfg.img_size} x {cfg.img_size} inputs; pass --resize to {what}, "
                             "or use the data the model was trained on")
        notes.append(f"note: --resize: the images are converted to the model's input: {what}")
    return dataset, notes


# ---------------------------------------------------------------- progress and the first compile
def kernels_compiled():
    """Whether Numba's cache already holds mst_ref's kernels (False: this is the first run, which
    compiles them). Any cached kernel counts: a run compiles only the kernels it uses, so the ones for
    other neuron kinds may stay uncompiled, and compiling one later takes seconds, not a minute."""
    try:
        from numba.core.registry import CPUDispatcher

        from ..core import kernels
        dispatchers = [v for v in vars(kernels).values() if isinstance(v, CPUDispatcher)]
        return any(Path(d._cache._cache_file._index_path).is_file() for d in dispatchers)
    except Exception:  # numba internals moved: assume compiled rather than print a wrong note
        return True


def note_compiling(stream=None):
    """Say, once, that the first run compiles the Numba kernels (about a minute on two cores)."""
    if not kernels_compiled():
        stream = sys.stderr if stream is None else stream
        stream.write("compiling kernels, once: the first run of mst_ref compiles its Numba kernels (about a "
                     "minute on two cores); later runs reuse the compiled cache\n")
        stream.flush()


class Progress:
    """A one-line progress bar on stderr: ``label [#####-----] done/total unit, elapsed, ETA``.

    The ETA is the rate since the first update with work done, times what is left; it is not shown
    until that rate rests on at least two updates, since the first piece of work includes one-off costs
    (compiling, caches) and would make the estimate jump.
    """

    _open = None  # the bar being drawn, so that an error message starts on a fresh line

    def __init__(self, label, total, unit="images", stream=None):
        self.label, self.total, self.unit = label, max(1, total), unit
        self.stream = sys.stderr if stream is None else stream
        self.start = time.perf_counter()
        self._first = None  # (time, done) of the first update with work done
        self._updates = 0
        Progress._open = self
        self.update(0)

    def update(self, done):
        now = time.perf_counter()
        elapsed = now - self.start
        eta = ""
        if 0 < done < self.total:
            if self._first is None:
                self._first = (now, done)
            else:
                self._updates += 1
                t0, d0 = self._first
                if self._updates >= 2 and done > d0:
                    eta = f", ETA {(now - t0) / (done - d0) * (self.total - done):.0f} s"
        filled = int(20 * done / self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'-' * (20 - filled)}] {done}/{self.total} "
                          f"{self.unit}, {elapsed:.1f} s{eta}      ")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()
        Progress._open = None


def progress_line(done, total, message=""):
    """A one-line progress bar on stderr for work counted in runs (``[####....] done/total message``),
    redrawn in place; a newline when done."""
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {message:<50.50}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- failing cleanly
def fail(command, message):
    """Print ``mst-ref COMMAND: error: message`` on stderr (on a fresh line) and return 2."""
    if Progress._open is not None:
        Progress._open.close()
    first = str(message).strip().splitlines()[0] if str(message).strip() else type(message).__name__
    print(f"mst-ref {command}: error: {first}", file=sys.stderr)
    return 2


def run_command(command, func, args):
    """Run ``func(args)``; expected failures become one error line and exit status 2, never a traceback."""
    try:
        return func(args)
    except KeyboardInterrupt:
        fail(command, "interrupted")
        return 130
    except (ValueError, OSError) as err:  # UsageError, DataError, CheckpointError, FileNotFoundError, ...
        return fail(command, err)
    except MemoryError:
        return fail(command, "out of memory: try a smaller --batch-size or --limit")
    except Exception as err:  # a bug: say so, and where to report it
        if os.environ.get("MST_REF_DEBUG"):
            raise
        return fail(command, f"unexpected {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                             f" - {REPORT_HINT}")
