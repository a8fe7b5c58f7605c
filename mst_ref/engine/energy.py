"""Energy accounting: spikes -> synaptic operations (SOPs) -> energy, against the ANN's MACs.

Not in the published code (docs/mst.md section 6). The field's convention (Spikformer, MST): work
triggered by spikes costs one accumulate (AC, an "SOP") per synapse reached, work on multi-bit values
one multiply-accumulate (MAC); every choice it leaves open is spelled out below. An SNN run is charged

    E_SNN = E_AC * SOPs + E_MAC * MACs,        E_ANN = E_MAC * MACs_ANN

with E_AC = 0.9 pJ and E_MAC = 4.6 pJ (32-bit float add / multiply-add at 45 nm, Horowitz 2014).

What each spike costs is a property of the model family: each config's ``energy_module`` names a
module that lists, for that architecture, every site's fan-out (the synapses one spike reaches), its
neurons per image, its products of two activations, and the analog MACs of one step
(:mod:`mst_ref.models.mst_energy` for MST, :mod:`mst_ref.models.cnn_energy` for the QCFS CNNs, whose
docstrings hold the tables). This module does the arithmetic common to all of them:

    SOPs = sum_t sum_sites spikes(site, t) * fan_out(site) + sum_t pairs(products, t)
    MACs (SNN) = input_macs + T * analog MACs per step          (per image)
    MACs (ANN) = input_macs + analog MACs + sum_sites neurons * fan_out + dense products

Energy accounting describes the faithful SNN (``compensation="none"``); with ``"expectation"`` the same
counts are reported, but the compensated ops (dense running sums) are not modelled, so a compensated
run's energy is not its cost. docs/energy.md lists the other choices (neuron updates and RSM's random
numbers are not charged; the ANN pays the MAC price for additions and for zeros).
"""

import importlib

import numpy as np

__all__ = ["E_AC_PJ", "E_MAC_PJ", "site_names", "fan_outs", "site_neurons", "product_names",
           "dense_product_macs", "input_macs", "analog_macs", "ann_macs_by_layer", "ann_macs", "sops_by_site",
           "snn_macs", "energy_pj"]

E_AC_PJ = 0.9  # pJ per accumulate (SOP), 45 nm
E_MAC_PJ = 4.6  # pJ per multiply-accumulate, 45 nm


def _table(config):
    """The energy table module of the config's model family."""
    # Each family's config names its table (a module of the family, which imports the family's layout);
    # loading it by name keeps this module below the model families in the import order.
    if not isinstance(getattr(config, "energy_module", None), str):
        raise ValueError(f"energy accounting needs a model config (MSTConfig or CNNConfig); got {type(config).__name__}")
    return importlib.import_module(config.energy_module)


def site_names(config):
    """The activation sites of the model, in forward order."""
    return _table(config).site_names(config)


def fan_outs(config):
    """Site -> synapses reached by one of its spikes (the family's table), in forward order."""
    return _table(config).fan_outs(config)


def site_neurons(config):
    """Site -> neurons per image (one step's output size), in forward order."""
    return _table(config).site_neurons(config)


def product_names(config):
    """Names of the products of two activations (MST's q k^T and p v; none in a CNN)."""
    return _table(config).product_names(config)


def dense_product_macs(config):
    """Product -> MACs per image when dense (the ANN)."""
    return _table(config).dense_product_macs(config)


def input_macs(config):
    """MACs of the first layer on the analog image, per image (run once: the image is static)."""
    return _table(config).input_macs(config)


def analog_macs(config):
    """Analog op -> MACs of one step per image (the family's list)."""
    return _table(config).analog_macs(config)


def _after(config):
    """Site -> the products booked right after it (those whose operands it completes)."""
    out = {}
    for op, site in _table(config).products_after(config).items():
        out.setdefault(site, []).append(op)
    return out


def ann_macs_by_layer(config):
    """The dense MACs of the ANN per image, by layer: input conv, analog ops, neurons x fan-out, products.

    Returns
    -------
    dict of {str: int}
        ``patch_embed.proj``, then every site (the MACs of what it feeds), product and analog op.
    """
    out = {_table(config).INPUT_NAME: input_macs(config)}
    neurons, fan = site_neurons(config), fan_outs(config)
    dense, analog = dense_product_macs(config), analog_macs(config)
    after = _after(config)
    for name in site_names(config):
        out[name] = int(round(neurons[name] * fan[name]))
        for op in after.get(name, ()):
            out[op] = dense[op]
    return out | analog


def ann_macs(config):
    """Total dense MACs of the ANN per image (sum of :func:`ann_macs_by_layer`)."""
    return sum(ann_macs_by_layer(config).values())


def sops_by_site(config, spike_counts, product_counts, synaptic_events=None):
    """SOPs of each site and product: spikes x fan-out, and the nonzero pairs of each product.

    Parameters
    ----------
    config : MSTConfig or CNNConfig
    spike_counts : dict of {str: int}
        Site -> spikes (e.g. ``SNNResult.spike_counts_by_site``: all steps, whole batch).
    product_counts : dict of {str: int}
        Product op -> multiplies with both operands nonzero, same steps and batch.
    synaptic_events : dict of {str: int} or None
        Site -> synapses its spikes reached, counted position by position (the CNNs' convolutions,
        whose fan-out is smaller at the borders); these replace spikes x mean fan-out.

    Returns
    -------
    dict of {str: int}
        Every site in forward order, each product op right after the site that completes its operands
        (``attn.qk`` after ``attn.k_if``, ``attn.pv`` after ``attn.v_if``).
    """
    fan, after, events = fan_outs(config), _after(config), synaptic_events or {}
    out = {}
    for name in site_names(config):
        # SOPs = spikes x fan-out (or the synapses counted position by position)
        out[name] = int(events[name]) if name in events else int(round(int(spike_counts[name]) * fan[name]))
        for op in after.get(name, ()):
            out[op] = int(product_counts[op])
    return out


def snn_macs(config, timesteps, batch_size=1, input_passes=1):
    """Analog MACs of an SNN run: ``batch_size * (input_passes * input_macs + timesteps * sum(analog_macs))``.

    ``input_passes`` is 1 for a static image (the first layer runs once) and T for a time-varying input
    (event frames: the first layer runs on a new input every step).
    """
    # MACs = B (passes * input + T * analog per step)
    return batch_size * (input_passes * input_macs(config) + timesteps * sum(analog_macs(config).values()))


def energy_pj(sops, macs, e_ac=E_AC_PJ, e_mac=E_MAC_PJ):
    """Energy in pJ: ``E = e_ac * sops + e_mac * macs`` (ANN: sops = 0)."""
    if not (np.isfinite(e_ac) and np.isfinite(e_mac) and e_ac >= 0 and e_mac >= 0):
        raise ValueError(f"energies per operation must be finite and >= 0 pJ; got e_ac={e_ac}, e_mac={e_mac}")
    # E = E_AC * SOPs + E_MAC * MACs
    return e_ac * float(sops) + e_mac * float(macs)
