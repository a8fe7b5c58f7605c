"""Why the spiking MST differs from its ANN: per-site errors, and which analog ops commute with time.

Two measurements on real inputs:

* :func:`site_errors`: at every activation site and for several T, the SNN's mean output (rate x
  lambda) against the ANN's activation, with the difference split exactly into the parts conversion
  theory names: leftover membrane (unevenness), quantization on the SNN side (L = T) and on the ANN side
  (L), and the error of the site's own input, which carries what the upstream sites and the per-step
  softmax, LayerNorm and products did.
* :func:`commutation_check`: for every analog op f (linear layers, BatchNorm, the products q k^T and
  p v, softmax, LayerNorm), does the mean over time of f applied per step equal f of the mean input?
  Affine ops do, up to rounding; the others do not. That is why the faithful SNN plateaus
  (docs/mst.md section 4) and why expectation compensation (section 8) makes it converge.

Both run the model's own forward pass (:meth:`mst_ref.models.mst.MST.forward`) with a
:class:`~mst_ref.engine.monitors.Monitor` that adds up, over time, the inputs and outputs it sees (:class:`_TimeSums`).
No spike train is kept, so memory does not grow with T, and one run to the largest T yields every
smaller T on the way. Notation: z the ANN input of a site, a its ANN activation, x_t the SNN input at
step t, s_t the SNN output (0 or lambda, after RSM), bars the means over steps 1..T.
"""

from dataclasses import dataclass, field

import numpy as np

from ..nn.layers import batch_norm, bn_params, head, linear
from ..engine.modes import Mode
from ..engine.monitors import Monitor
from ..core.qcfs import clip_activation, qcfs
from ..engine.simulate import check_timesteps

__all__ = ["PARTS", "SiteErrors", "site_errors", "commutation_error", "commutation_check", "op_kind"]

PARTS = ("unevenness", "time_quantization", "propagated", "ann_quantization")  # sum to rate - a


class _TimeSums(Monitor):
    """A monitor that sums over time what the analysis needs (the readable path only).

    Parameters
    ----------
    spiking : bool
        Whether the mode it watches is the SNN (values ``(T, ...)``, summed over T) or the ANN.
    watch : frozenset of str
        Sites whose inputs and outputs are summed into ``sums["in", site]`` and ``sums["out", site]``.
    after : dict of {str: list of (str, callable)}
        Site or analog op -> ops ``(name, f)`` fed by its output (the linear layers and BatchNorms).
    tap_ops : bool
        Also sum the analog ops and products, and the ops of ``after``, applied per step:
        ``sums["f", op]`` = sum_t f(x_t), ``sums["x", op, k]`` = sum_t of its k-th input.

    Attributes
    ----------
    sums : dict
        float64 arrays without the time axis (the ANN's values as they are).
    funcs : dict of {str: (callable, int)}
        Op name -> (f, number of inputs), in the order the ops were first seen (forward order).
    """

    def __init__(self, spiking, watch=frozenset(), after=None, tap_ops=False):
        self.spiking, self.watch, self.after, self.tap_ops = spiking, frozenset(watch), after or {}, tap_ops
        self.sums, self.funcs = {}, {}

    def _add(self, key, x):
        # S <- S + sum_t x_t
        s = x.sum(axis=0, dtype=np.float64) if self.spiking else x.astype(np.float64)
        self.sums[key] = self.sums[key] + s if key in self.sums else s

    def _add_op(self, name, f, *args):
        self.funcs.setdefault(name, (f, len(args)))
        self._add(("f", name), f(*args))  # f applied to each step's inputs
        for k, arg in enumerate(args):
            self._add(("x", name, k), arg)

    def _feed(self, name, y):
        if self.tap_ops:
            for op, f in self.after.get(name, ()):
                self._add_op(op, f, y)

    def on_site(self, event):
        if event.name in self.watch:
            self._add(("in", event.name), event.input)
            self._add(("out", event.name), event.output)
        self._feed(event.name, event.output)

    def on_analog(self, name, y, f=None, x=None):
        if self.tap_ops:
            self._add_op(name, f, x)
        self._feed(name, y)

    def on_product(self, event):
        if self.tap_ops:
            self._add_op(event.name, np.matmul, event.a, event.b)


def _tapped(mode, sums):
    """``mode`` on the readable path (the fused kernels do not call the hooks), watched by ``sums``."""
    mode.fast = False
    mode.monitors.append(sums)
    return mode, sums


def _stops(timesteps):
    """Sorted distinct T values, each an int >= 1."""
    values = [timesteps] if np.isscalar(timesteps) else list(timesteps)
    if not values:
        raise ValueError("timesteps must name at least one T, e.g. (1, 2, 4, 8)")
    return tuple(sorted({check_timesteps(t, "each of timesteps") for t in values}))


def _run_to(model, images, mode, t, stop, chunk):
    """Advance the SNN ``mode`` from step t to ``stop``; return the sum of the head outputs (B, K)."""
    total = 0.0
    while t < stop:
        mode.steps = min(chunk, stop - t)
        total = total + model.forward(images, mode).sum(axis=0, dtype=np.float64)  # (B, K)
        t += mode.steps
    sums = mode.monitor(_TimeSums)
    if (sums.watch or sums.tap_ops) and not sums.sums:
        raise RuntimeError("the forward pass did not go through Mode.site / analog / product, so nothing "
                           "was measured; mst_ref.analysis.site_errors needs the readable path (Mode.fast = False)")
    return total


def _batches(images, batch_size):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    for start in range(0, len(images), batch_size):
        yield start, images[start:start + batch_size]


@dataclass
class SiteErrors:
    """Per-site ANN vs SNN errors: rows are sites in forward order, columns the T values.

    Every per-neuron quantity is averaged over all neurons of the site and all images. See
    :func:`site_errors` for the definitions.
    """

    sites: list  # R site names
    timesteps: tuple  # C values of T
    thresholds: np.ndarray  # (R,) lambda
    mean_abs_error: np.ndarray  # (R, C) mean |r - a|
    relative_error: np.ndarray  # (R, C) ||r - a|| / ||a|| (nan where a = 0 everywhere)
    correlation: np.ndarray  # (R, C) Pearson correlation of r and a (nan where either is constant)
    unevenness: np.ndarray  # (R, C) mean |r - qcfs_T(x)|
    time_quantization: np.ndarray  # (R, C) mean |qcfs_T(x) - clip(x)|
    propagated: np.ndarray  # (R, C) mean |clip(x) - clip(z)|
    input_error: np.ndarray  # (R, C) mean |x - z|
    ann_quantization: np.ndarray  # (R,) mean |clip(z) - a|
    clip_above: np.ndarray  # (R,) fraction of z > lambda
    clip_below: np.ndarray  # (R,) fraction of z < 0
    clip_amount: np.ndarray  # (R,) mean |z - clip(z)|
    ann_mean: np.ndarray  # (R,) mean a
    logit_error: np.ndarray  # (C,) ||mean SNN logits - ANN logits|| / ||ANN logits||
    accuracy: np.ndarray = None  # (C,) SNN accuracy at each T, when labels were given
    ann_accuracy: float = None
    num_images: int = 0
    compensation: str = "none"
    quantize: bool = True  # reference ANN: QCFS (True) or clip (False)
    levels: int = 16  # L of the reference QCFS

    def parts(self, column=-1):
        """dict part name -> (R,) mean \\|part\\| at one column, in :data:`PARTS` order."""
        return {"unevenness": self.unevenness[:, column],
                "time_quantization": self.time_quantization[:, column],
                "propagated": self.propagated[:, column],
                "ann_quantization": self.ann_quantization}


def site_errors(model, images, timesteps=(1, 2, 4, 8, 16, 32), compensation="none", mask_ratio=0.0, rng=None,
                sites=None, labels=None, quantize=True, batch_size=8, mask_sites="published", progress=None):
    """Compare every site's SNN mean output with the ANN's activation, for several T, split into parts.

    Parameters
    ----------
    model : MST
    images : (B, Cin, H, W) float ndarray
        Normalised images.
    timesteps : int or iterable of int
        The T values; one SNN run to the largest passes through all of them.
    compensation : {"none", "expectation"}
        The SNN compared (faithful, or expectation-compensated, docs/mst.md section 8).
    mask_ratio, rng, mask_sites
        RSM of the SNN (:meth:`mst_ref.models.mst.MST.snn_forward`). The ANN reference is never masked.
    sites : None, str or iterable of str
        Sites to analyse (names or glob patterns); None: all.
    labels : (B,) int ndarray or None
        Given: the accuracies of the ANN and of the SNN at each T are computed too.
    quantize : bool
        Reference ANN: QCFS with the model's L (True, the trained network) or clip (False, the
        network the compensated SNN converges to).
    batch_size : int
        Images per run (memory ~ batch_size x all sites' neurons x 3 float64 sums, plus one chunk).
    progress : callable or None
        Called as ``progress(images_done, images_total)`` after each batch.

    Returns
    -------
    SiteErrors

    Notes
    -----
    At a site with threshold lambda, for one neuron: z is its ANN input, a = qcfs_L(z) its ANN
    activation (clip(z, 0, lambda) when ``quantize=False``); x_t its SNN input at step t and
    :math:`\\bar x = \\frac1T \\sum_t x_t`; s_t its SNN output after RSM and
    :math:`r = \\frac1T \\sum_t s_t` (rate x lambda). The error e = r - a is reported as mean \\|e\\|,
    \\|\\|e\\|\\| / \\|\\|a\\|\\| and the correlation of r with a, and it splits exactly into four parts:

    .. math:: r - a = \\underbrace{r - q_T(\\bar x)}_{\\text{unevenness}}
              + \\underbrace{q_T(\\bar x) - c(\\bar x)}_{\\text{time quantization}}
              + \\underbrace{c(\\bar x) - c(z)}_{\\text{propagated}}
              + \\underbrace{c(z) - a}_{\\text{ANN quantization}}

    with :math:`q_T` QCFS at L = T and :math:`c(x) = \\mathrm{clip}(x, 0, \\lambda)`.

    - unevenness: an IF neuron fed its mean input at every step emits exactly :math:`q_T(\\bar x)`
      (docs/mst.md section 2), so this part is due to the order in which the input arrived. Since
      :math:`v_T = \\lambda/2 + \\sum_t x_t - \\sum_t s_t`, it equals the difference of leftover
      membranes, :math:`(v_T^{even} - v_T) / T`. With RSM it also holds the masked spikes.
    - time quantization: the rate has only T + 1 values; :math:`|.| \\le \\lambda / (2T)`.
    - propagated: the error of the site's mean input passed through the clip. ``input_error`` =
      mean :math:`|\\bar x - z|` (>= \\|propagated\\|) is that input error itself: the errors of upstream
      sites carried by the affine layers, plus what softmax, LayerNorm and the q k^T, p v products
      acting per step add upstream (they do not commute with the mean over time:
      :func:`commutation_check`). In the faithful SNN it does not vanish as T grows; with expectation
      compensation it does, except for the ANN's own quantization of upstream sites.
    - ANN quantization: QCFS vs its continuous limit, :math:`|.| \\le \\lambda / (2L)`; independent
      of T, and 0 when ``quantize=False``.

    The clipping of conversion theory (what a ReLU network would pass on and both networks cut) is
    reported for the ANN input: ``clip_above``, ``clip_below`` (fractions of z above lambda, below 0)
    and ``clip_amount`` = mean :math:`|z - c(z)|`. It is not part of e.
    """
    images = model.check_images(images)
    stops = _stops(timesteps)
    chosen = model.select_sites("all" if sites is None else sites)
    names = [n for n in model.site_names if n in chosen]
    lam = np.array([float(model.threshold(n).reshape(-1)[0]) for n in names])  # (R,)
    R, C, L = len(names), len(stops), model.config.qcfs_levels
    ann_sums, snn_sums = np.zeros((R, 7)), np.zeros((R, C, 9))  # see _ann_sums, _snn_sums
    logit_sq, ann_sq, correct, ann_correct = np.zeros(C), 0.0, np.zeros(C), 0
    chunk = model.default_chunk(min(batch_size, len(images)), stops[-1], None)
    for start, x in _batches(images, batch_size):
        y = None if labels is None else labels[start:start + len(x)]
        ann_mode, ann = _tapped(Mode(spiking=False, quantize=quantize, levels=L, quantizer=model.quantizer),
                                _TimeSums(False, chosen))
        ann_logits = model.forward(x, ann_mode).astype(np.float64)  # (B, K)
        ann_sq += (ann_logits**2).sum()
        ann_correct += 0 if y is None else np.count_nonzero(ann_logits.argmax(-1) == y)
        for i, n in enumerate(names):
            ann_sums[i] += _ann_sums(ann.sums["in", n], ann.sums["out", n], lam[i])
        snn_mode, snn = _tapped(Mode(spiking=True, levels=L, compensation=compensation,
                                     masker=model.masker(mask_ratio, rng, mask_sites)), _TimeSums(True, chosen))
        logit_sum = 0.0
        for c, T in enumerate(stops):
            logit_sum = logit_sum + _run_to(model, x, snn_mode, stops[c - 1] if c else 0, T, chunk)  # (B, K)
            logit_sq[c] += ((logit_sum / T - ann_logits) ** 2).sum()
            correct[c] += 0 if y is None else np.count_nonzero(logit_sum.argmax(-1) == y)
            for i, n in enumerate(names):
                snn_sums[i, c] += _snn_sums(ann.sums["in", n], ann.sums["out", n], snn.sums["in", n] / T,
                                            snn.sums["out", n] / T, lam[i], T)
        if progress is not None:
            progress(start + len(x), len(images))

    n, s_a, s_aa, s_annq, n_above, n_below, s_clip = ann_sums.T  # (R,) each
    s_abs, s_sq, s_r, s_rr, s_ra, s_uneven, s_timeq, s_prop, s_input = np.moveaxis(snn_sums, -1, 0)  # (R, C)
    nc = n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_r, mean_a = s_r / nc, (s_a / n)[:, None]
        var_r, var_a = s_rr / nc - mean_r**2, (s_aa / n)[:, None] - mean_a**2
        cov = s_ra / nc - mean_r * mean_a
        correlation = np.where((var_r > 0) & (var_a > 0), cov / np.sqrt(var_r * var_a), np.nan)
        relative = np.where(s_aa[:, None] > 0, np.sqrt(s_sq / s_aa[:, None]), np.nan)
    return SiteErrors(
        sites=names, timesteps=stops, thresholds=lam,
        mean_abs_error=s_abs / nc, relative_error=relative, correlation=np.clip(correlation, -1, 1),
        unevenness=s_uneven / nc, time_quantization=s_timeq / nc, propagated=s_prop / nc,
        input_error=s_input / nc, ann_quantization=s_annq / n, clip_above=n_above / n,
        clip_below=n_below / n, clip_amount=s_clip / n, ann_mean=s_a / n,
        logit_error=np.sqrt(logit_sq / ann_sq) if ann_sq > 0 else np.full(C, np.nan),
        accuracy=None if labels is None else correct / len(images),
        ann_accuracy=None if labels is None else ann_correct / len(images),
        num_images=len(images), compensation=compensation, quantize=quantize, levels=L,
    )


def _ann_sums(z, a, lam):
    """One site's ANN quantities summed over neurons and images.

    Returns (7,): n, sum a, sum a^2, sum |c(z) - a|, #(z > lambda), #(z < 0), sum |z - c(z)|.
    """
    cz = clip_activation(z, lam)
    return np.array([z.size, a.sum(), (a * a).sum(), np.abs(cz - a).sum(), np.count_nonzero(z > lam),
                     np.count_nonzero(z < 0), np.abs(z - cz).sum()])


def _snn_sums(z, a, xbar, rate, lam, T):
    """One site's error terms after T steps, summed over neurons and images.

    Returns (9,): sum |e|, sum e^2, sum r, sum r^2, sum r a, then the sums of |unevenness|,
    |time quantization|, |propagated| and |xbar - z|.
    """
    e = rate - a
    # r - a = (r - q_T(xbar)) + (q_T(xbar) - c(xbar)) + (c(xbar) - c(z)) + (c(z) - a)
    q_x, c_x = qcfs(xbar, lam, T), clip_activation(xbar, lam)
    parts = (rate - q_x, q_x - c_x, c_x - clip_activation(z, lam))
    return np.array([np.abs(e).sum(), (e * e).sum(), rate.sum(), (rate * rate).sum(), (rate * a).sum(),
                     *(np.abs(p).sum() for p in parts), np.abs(xbar - z).sum()])


# ---------------------------------------------------------------- commutation of analog ops with time


def commutation_error(f, *trains):
    """Relative error of f applied per step, averaged, against f of the averaged inputs.

    Parameters
    ----------
    f : callable
        The op; ``f(*inputs)`` of one step's inputs, broadcasting over leading axes.
    *trains : (T, ...) ndarrays
        Its inputs at each step.

    Returns
    -------
    float
        :math:`\\| \\frac1T \\sum_t f(x_t) - f(\\bar x) \\| / \\| f(\\bar x) \\|` (Frobenius norms,
        float64), 0 for affine f up to rounding.
    """
    mean_f = np.mean(f(*trains), axis=0, dtype=np.float64)
    f_mean = f(*(np.mean(x, axis=0, dtype=np.float64) for x in trains))
    return float(np.linalg.norm(mean_f - f_mean) / np.linalg.norm(f_mean))


_KINDS = {"qkv": "linear", "proj": "linear", "fc1": "linear", "fc2": "linear", "head": "linear",
          "norm1": "batch_norm", "norm": "layer_norm", "softmax": "softmax", "qk": "product", "pv": "product"}


def op_kind(name):
    """Kind of an op of :func:`commutation_check`: linear, batch_norm, layer_norm, softmax or product."""
    return _KINDS[name.rsplit(".", 1)[-1]]


def _fed_ops(model):
    """Ops fed by a site's (or the final LayerNorm's) output: source -> [(op name, f)], forward order."""
    s, after = model.state, {}

    def feed(source, op, f):
        after.setdefault(source, []).append((op, f))

    def affine(prefix, norm=None):  # Linear, then BatchNorm where the 'imagenet' MLP has one
        w, b = s[f"{prefix}.weight"], s.get(f"{prefix}.bias")
        bn = bn_params(s, norm) if norm else None
        return lambda y: linear(y, w, b) if bn is None else batch_norm(linear(y, w, b), *bn)

    for i, stage in enumerate(model.config.stages):
        for j in range(stage.depth):
            p = f"layers.{i}.blocks.{j}"
            mlp_bn = model.config.mlp_norm
            if j == 0:  # the stage's input is a site's output only in its first block
                source = "patch_embed.proj_if" if i == 0 else f"layers.{i - 1}.downsample.reduction_if"
                bn = bn_params(s, f"{p}.norm1")
                feed(source, f"{p}.norm1", lambda y, bn=bn: batch_norm(y, *bn))
            feed(f"{p}.shortcut1_if", f"{p}.attn.qkv", affine(f"{p}.attn.qkv"))
            feed(f"{p}.attn.attn_v_if", f"{p}.attn.proj", affine(f"{p}.attn.proj"))
            feed(f"{p}.shortcut2_if", f"{p}.mlp.fc1", affine(f"{p}.mlp.fc1", mlp_bn and f"{p}.mlp.norm1"))
            feed(f"{p}.mlp.fc1_if", f"{p}.mlp.fc2", affine(f"{p}.mlp.fc2", mlp_bn and f"{p}.mlp.norm2"))
    feed("norm", "head", lambda y: head(y, s["head.weight"], s["head.bias"]))
    return after


def commutation_check(model, images, timesteps=16, compensation="none", mask_ratio=0.0, rng=None,
                      batch_size=8, mask_sites="published"):
    """Does each analog op of the model commute with the mean over time, on inputs from an SNN run?

    Parameters
    ----------
    model : MST
    images : (B, Cin, H, W) float ndarray
    timesteps : int
        T of the SNN run that supplies the inputs.
    compensation, mask_ratio, rng, mask_sites
        The SNN run, as in :meth:`mst_ref.models.mst.MST.snn_forward`.
    batch_size : int

    Returns
    -------
    dict of {str: float}
        Op name -> relative error (:func:`commutation_error`, norms over all images), in forward
        order. Ops: ``<block>.norm1`` (BatchNorm, first block of each stage, whose input is a site's
        output), ``<block>.attn.qkv``, ``.attn.qk`` (q k^T), ``.attn.softmax``, ``.attn.pv`` (p v),
        ``.attn.proj``, ``<block>.mlp.fc1``, ``.mlp.fc2`` (Linear [+ BatchNorm]), ``norm`` (the final
        LayerNorm) and ``head`` (mean over tokens + Linear). :func:`op_kind` names the kind of each.

    Notes
    -----
    Each op's inputs are the ones it really receives in that run: x_t (or a_t, b_t for a product),
    taken from the mode's analog ops and products and from the outputs of the sites feeding the
    linear layers. Reported: :math:`\\| \\frac1T \\sum_t f(x_t) - f(\\bar x) \\| / \\| f(\\bar x) \\|`.
    Affine ops give 0 up to float rounding; softmax, LayerNorm and the products do not, because they
    are not linear in x_t, so the faithful SNN's layer means drift from the ANN's (docs/mst.md section 4).
    Expectation compensation makes each such op emit increments whose mean is exactly f of the mean
    input (section 8), which is why it converges.
    """
    if getattr(model.config, "family", "mst") != "mst":
        raise ValueError("a QCFS CNN has no analog operation to check: convolution, BatchNorm, average pooling "
                         "and the residual add are affine, so they commute with the mean over time exactly")
    images = model.check_images(images)
    T = check_timesteps(timesteps, "timesteps")
    chunk = model.default_chunk(min(batch_size, len(images)), T, None)
    after, num, den = _fed_ops(model), {}, {}
    for _, x in _batches(images, batch_size):
        tap_mode, tap = _tapped(Mode(spiking=True, levels=model.config.qcfs_levels, compensation=compensation,
                                     masker=model.masker(mask_ratio, rng, mask_sites)),
                                _TimeSums(True, after=after, tap_ops=True))
        _run_to(model, x, tap_mode, 0, T, chunk)
        for op, (f, arity) in tap.funcs.items():
            # || mean_t f(x_t) - f(mean_t x_t) ||^2 and || f(mean_t x_t) ||^2, added over batches
            f_mean = f(*(tap.sums["x", op, k] / T for k in range(arity)))
            num[op] = num.get(op, 0.0) + float(((tap.sums["f", op] / T - f_mean) ** 2).sum())
            den[op] = den.get(op, 0.0) + float((f_mean**2).sum())
    return {op: float(np.sqrt(num[op] / den[op])) if den[op] > 0 else float("nan") for op in num}
