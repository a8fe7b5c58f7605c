"""Per-image mask randomness: RSM's uniforms derived from (seed, image index), not from the batch.

:class:`~mst_ref.engine.masking.SpikeMasker` normally seeds one child generator per site from the
caller's generator, so the masks an image receives depend on which batch it was in and where. For a run
split into shards over processes or machines (:mod:`mst_ref.distributed`) the masks must not depend on
the batch size, the shard size or the number of workers. Passing an :class:`ImageSeeds` in place of the
generator does that: every (site, image) pair gets its own generator, seeded from

    SeedSequence([seed, stream, image index, site position])   (seed: one integer or several)

(``site position`` = the site's place in ``site_names``, masked or not; ``stream`` separates the ANN's
masks from the SNN's), and the batch's uniforms are those images' draws stacked along the batch axis.
Each image's generator draws in time order, so chunked and step-by-step runs draw the same masks too.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageSeeds", "ImageStreams"]

STREAMS = {"ann": 0, "snn": 1}


@dataclass(frozen=True)
class ImageSeeds:
    """The images of a batch and the seed their masks derive from; pass it as ``rng`` when masking.

    Attributes
    ----------
    seed : int or tuple of int
        The run's mask seed (``--seed``), >= 0; a tuple (e.g. ``(seed, repeat)``) names one of several
        runs with the same seed.
    indices : tuple of int, length B
        Each image's index in the dataset, in batch order.
    stream : {"ann", "snn"}
        Which forward pass draws: the ANN's site outputs are ``(B_, ...)`` (batch axis 0), the SNN's
        ``(T, B_, ...)`` (batch axis 1).
    """

    seed: int
    indices: tuple
    stream: str = "snn"

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise ValueError(f"stream must be one of {sorted(STREAMS)}; got {self.stream!r}")
        seeds = self.seed if isinstance(self.seed, (tuple, list)) else (self.seed,)
        if not seeds or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in seeds):
            raise ValueError(f"seed must be an integer >= 0 or a tuple of them; got {self.seed!r}")
        if not self.indices or any(int(i) < 0 for i in self.indices):
            raise ValueError(f"indices must be one or more image indices >= 0; got {self.indices!r}")

    def streams(self, site_position):
        """The :class:`ImageStreams` of the site at ``site_position`` in ``site_names``."""
        seeds = [int(v) for v in (self.seed if isinstance(self.seed, (tuple, list)) else (self.seed,))]
        gens = [np.random.default_rng(np.random.SeedSequence([*seeds, STREAMS[self.stream], int(i),
                                                              int(site_position)]))
                for i in self.indices]
        return ImageStreams(gens, 0 if self.stream == "ann" else 1)


class ImageStreams:
    """One generator per image of a batch, drawing like one ``np.random.Generator`` of the whole batch.

    ``random(shape)`` with ``shape[batch_axis] = B * k`` (the batch axis may hold k rows per image, e.g.
    B * nW windows, images outermost) returns ``(..., B * k, ...)`` float64 uniforms whose rows of image b
    are generator b's next ``(..., k, ...)`` draws.
    """

    def __init__(self, generators, batch_axis):
        self.generators, self.batch_axis = list(generators), batch_axis

    def random(self, shape):
        shape, ax, B = tuple(shape), self.batch_axis, len(self.generators)
        if len(shape) <= ax or shape[ax] % B:
            raise ValueError(f"per-image masks: axis {ax} of a site output {shape} must hold the batch's {B} "
                             "images (a multiple of B rows, images outermost)")
        lead, k, rest = shape[:ax], shape[ax] // B, shape[ax + 1:]
        out = np.empty(lead + (B, k) + rest)  # (..., B, k, ...) float64
        # Each generator fills its image's rows in place, one contiguous (k, ...) block per index of
        # the leading axes, in C order (time first): the same draws as g.random(lead + (k,) + rest)
        # stacked along the batch axis, without building B arrays and concatenating them (which took
        # longer than drawing the numbers).
        for b, g in enumerate(self.generators):
            for i in np.ndindex(*lead):
                g.random((k,) + rest, out=out[i + (b,)])
        return out.reshape(shape)  # (..., B * k, ...)
