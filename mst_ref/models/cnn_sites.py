"""Where RSM masks a QCFS CNN: the named masking configurations of ResNet-18 and VGG-16.

A masking configuration is a set of activation sites whose output spikes RSM multiplies by a fresh
Bernoulli(1 - p) mask at every step (:mod:`mst_ref.engine.masking`). Masking a site removes, in
expectation, p of the synaptic operations (SOPs) its spikes drive, so a configuration behind which a
share f of the SOPs lies saves about f p of them (before the masked spikes change how the later layers
fire):

.. math:: P \\approx 1 - f\\, p, \\qquad f = \\frac{\\sum_{s \\in \\text{masked}} \\mathrm{SOPs}_s}{\\sum_s \\mathrm{SOPs}_s}\\ \\text{at } p = 0

(:func:`mst_ref.analysis.rsm_table.masked_share` measures f). The MST paper masks its CNN baselines
"in each block" without saying which spikes; these configurations are the readings of that phrase a
CNN allows. A site's spikes all go through one mask, so every layer reading a masked site sees the
mask (a ResNet block's first convolution and its shortcut read the same spikes).

ResNet-18 (17 sites: ``conv1.2``, then per BasicBlock ``residual_function.2`` and ``act``):

=====================  ========================================================================
``all``                every site (also ``published`` and ``paper``: what the CNNs were masked at
                       before these configurations existed)
``block-input``        the spikes each BasicBlock receives: ``conv1.2`` and the ``act`` of every
                       block but the last (whose spikes feed the pooled classifier, not a block)
``stream``             ``block-input`` and the last ``act``: every site on the residual stream (the
                       last ``act`` feeds only the classifier, ~0.1% of the SOPs: the same reading
                       as ``block-input``, so not a separate candidate of the reconstruction)
``residual-branch``    the spikes inside each block's residual branch (``residual_function.2``,
                       between its two convolutions)
``conv2_x`` ...        every site of one stage (its two blocks); ``conv1`` = ``conv1.2``
=====================  ========================================================================

VGG-16 (15 sites: 13 ``layerN.M`` after the convolutions, ``classifier.2``, ``classifier.5``):

=====================  ========================================================================
``all``                every site (also ``published`` and ``paper``)
``stage-input``        the spikes that, average-pooled, enter the first convolution of stages 2-5:
                       the last site of ``layer1`` ... ``layer4`` (stage 1 reads the analog image)
``stage-output``       the last site of every stage (``stage-input`` and the spikes entering the
                       classifier)
``stage-first``        the first site of every stage (after its first convolution)
``layer1`` ...         every site of one stage; ``classifier`` = its two hidden layers
=====================  ========================================================================

The configuration each family's table runs by default is the one whose energy ratios come closest
to the poster's power figure (:data:`RECONSTRUCTED`; docs/masking_table.md has the measurement).
"""

from .cnn_layout import RESNET_STAGES, cnn_site_names, resnet_blocks, vgg_convs

__all__ = ["cnn_mask_presets", "structural_presets", "RECONSTRUCTED"]

# the configuration closest to the poster's P at p = 0.5 / 0.75, per architecture (measured:
# ``mst-ref rsm-table --cnn-sites ...``, docs/masking_table.md)
RECONSTRUCTED = {"resnet18": "block-input", "vgg16": "stage-input"}

STRUCTURAL = {  # network-wide configurations (one reading of "each block"), per architecture; "stream" is
    # not one: it is block-input plus the last act, whose spikes (~0.1% of the SOPs) feed only the classifier
    "resnet18": ("all", "block-input", "residual-branch"),
    "vgg16": ("all", "stage-input", "stage-output", "stage-first"),
}


def structural_presets(config):
    """The network-wide configurations of the architecture (not the per-stage ones), in table order."""
    return STRUCTURAL[config.arch]


def cnn_mask_presets(config):
    """Configuration name -> the site names it masks, in forward order.

    Parameters
    ----------
    config : CNNConfig

    Returns
    -------
    presets : dict of {str: tuple of str}
        Full site names (``cnn_site_names(config)`` order); see the module docstring for each name.
    """
    every = tuple(cnn_site_names(config))
    presets = {"all": every, "published": every, "paper": every}
    if config.arch == "resnet18":
        blocks = [prefix for prefix, *_ in resnet_blocks(config)]
        acts = [f"{b}.act" for b in blocks]
        presets["block-input"] = ("conv1.2", *acts[:-1])
        presets["stream"] = ("conv1.2", *acts)
        presets["residual-branch"] = tuple(f"{b}.residual_function.2" for b in blocks)
        presets["conv1"] = ("conv1.2",)
        for stage in RESNET_STAGES:
            presets[stage] = tuple(n for n in every if n.startswith(stage + "."))
        return presets
    convs = vgg_convs(config)
    last = [site for _, site, _, _, _, pooled in convs if pooled]  # (5,) before each pool
    presets["stage-input"] = tuple(last[:-1])
    presets["stage-output"] = tuple(last)
    firsts, seen = [], set()
    for _, site, *_ in convs:
        stage = site.split(".")[0]
        if stage not in seen:
            firsts.append(site)
            seen.add(stage)
    presets["stage-first"] = tuple(firsts)
    for i in range(1, 6):
        presets[f"layer{i}"] = tuple(n for n in every if n.startswith(f"layer{i}."))
    presets["classifier"] = ("classifier.2", "classifier.5")
    return presets
