"""Structural surgery: physically remove hidden neurons from a NeRF MLP.

Every prunable hidden layer (trunk layers ``pts.i``, ``feature`` and view layers ``views.i``)
loses rows of its weight and bias; every layer that reads it loses the matching columns:

* trunk layer ``i`` feeds trunk layer ``i+1`` (after the skip, the columns that follow the
  encoded input; the encoded-input columns themselves are never pruned);
* the last trunk layer feeds both the density head ``alpha_linear`` and ``feature_linear``;
* ``feature`` feeds the first view layer (its columns before the encoded view direction);
* view layer ``i`` feeds view layer ``i+1`` or ``rgb_linear``.

A removed neuron is not simply dropped. Its mean output ``m_j`` on calibration samples is
folded into the consumers' biases (``b += W[:, j] m_j``), so removing a neuron that is constant
on the calibration set (dead, or always on with a constant input) changes nothing. Kept neurons
may carry a scale ``s_j`` on their outgoing weights (coresets); the fold then keeps the mean
exact: ``b += sum_j W[:, j] m_j - sum_kept s_j W[:, j] m_j``.

Weights are edited in float64 and stored as float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nerfexport.model.mlp import MLPConfig, NeRF, NeRFConfig, NeRFMLP


@dataclass
class Layer:
    """One prunable hidden layer: its producing Linear and the (Linear, first column) it feeds."""

    name: str
    producer: str                       # attribute path, e.g. "pts_linears.3"
    consumers: list[tuple[str, int]]    # (attribute path, column offset of this layer's outputs)
    relu: bool                          # False for feature_linear (no activation)
    width: int


def layers(cfg: MLPConfig) -> list[Layer]:
    """The prunable hidden layers of a network with config ``cfg``, input to output."""
    out = []
    D = len(cfg.widths)
    last_consumers = ([("alpha_linear", 0), ("feature_linear", 0)] if cfg.use_viewdirs
                      else [("output_linear", 0)])
    for i, w in enumerate(cfg.widths):
        cons = [(f"pts_linears.{i + 1}", cfg.input_ch if i in cfg.skips else 0)] if i < D - 1 else last_consumers
        out.append(Layer(f"pts.{i}", f"pts_linears.{i}", cons, True, w))
    if cfg.use_viewdirs:
        out.append(Layer("feature", "feature_linear", [("views_linears.0", 0)], False, cfg.feature_width))
        nv = len(cfg.view_widths)
        for i, w in enumerate(cfg.view_widths):
            cons = [(f"views_linears.{i + 1}", 0)] if i < nv - 1 else [("rgb_linear", 0)]
            out.append(Layer(f"views.{i}", f"views_linears.{i}", cons, True, w))
    return out


def _linear(net: nn.Module, path: str) -> nn.Linear:
    mod = net
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def layer_outputs(net: NeRFMLP, pts: torch.Tensor, dirs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Post-activation output of every prunable layer: ``pts (N,3), dirs (N,3) -> {name: (N, width)}``."""
    cfg = net.cfg
    x = net.embed(pts)
    h = x
    outs = {}
    for i, lin in enumerate(net.pts_linears):
        h = F.relu(lin(h))
        outs[f"pts.{i}"] = h
        if i in cfg.skips:
            h = torch.cat((x, h), -1)
    if cfg.use_viewdirs:
        f = net.feature_linear(h)
        outs["feature"] = f
        h = torch.cat((f, net.embed_views(dirs)), -1)
        for i, lin in enumerate(net.views_linears):
            h = F.relu(lin(h))
            outs[f"views.{i}"] = h
    return outs


@dataclass
class ActivationStats:
    """Per-neuron statistics of each layer's outputs over calibration samples (float64 tensors)."""

    count: int = 0
    mean: dict[str, torch.Tensor] = field(default_factory=dict)
    mean_abs: dict[str, torch.Tensor] = field(default_factory=dict)
    min: dict[str, torch.Tensor] = field(default_factory=dict)
    max: dict[str, torch.Tensor] = field(default_factory=dict)

    def max_dev(self, name: str) -> torch.Tensor:
        """``max_x |a_j(x) - mean_j|`` per neuron."""
        return torch.maximum(self.max[name] - self.mean[name], self.mean[name] - self.min[name])


@torch.no_grad()
def activation_stats(net: NeRFMLP, pts: np.ndarray | torch.Tensor, dirs: np.ndarray | torch.Tensor,
                     chunk: int = 16384) -> ActivationStats:
    """Per-neuron activation statistics of ``net`` (in fp32) over calibration samples.

    Args:
        net: The network.
        pts, dirs: Points and unit view directions. Arrays or tensors with shape ``(N, 3)``.
        chunk: Samples per forward pass.

    Returns:
        :class:`ActivationStats`: per layer, the min, max, mean and mean absolute activation of
        each neuron, tensors with shape ``(width,)``.
    """
    pts, dirs = torch.as_tensor(pts, dtype=torch.float32), torch.as_tensor(dirs, dtype=torch.float32)
    if pts.shape[0] == 0:
        raise ValueError("no calibration samples")
    st = ActivationStats()
    sums, abss = {}, {}
    for s in range(0, pts.shape[0], chunk):
        outs = layer_outputs(net, pts[s:s + chunk], dirs[s:s + chunk])
        for k, a in outs.items():
            a = a.double()
            if k not in sums:
                sums[k], abss[k] = a.sum(0), a.abs().sum(0)
                st.min[k], st.max[k] = a.min(0).values, a.max(0).values
            else:
                sums[k] += a.sum(0)
                abss[k] += a.abs().sum(0)
                st.min[k] = torch.minimum(st.min[k], a.min(0).values)
                st.max[k] = torch.maximum(st.max[k], a.max(0).values)
    st.count = int(pts.shape[0])
    st.mean = {k: v / st.count for k, v in sums.items()}
    st.mean_abs = {k: v / st.count for k, v in abss.items()}
    return st


@dataclass
class Selection:
    """Which neurons of a layer survive (sorted indices), and the scale of their outgoing weights."""

    keep: torch.Tensor                  # (k,) int64, sorted
    scale: torch.Tensor | None = None   # (k,) float64, None = 1

    def __post_init__(self) -> None:
        self.keep = torch.as_tensor(self.keep, dtype=torch.int64)
        order = torch.argsort(self.keep)
        self.keep = self.keep[order]
        if self.scale is not None:
            self.scale = torch.as_tensor(self.scale, dtype=torch.float64)[order]
        if self.keep.numel() == 0:
            raise ValueError("a layer must keep at least one neuron")
        if torch.unique(self.keep).numel() != self.keep.numel():
            raise ValueError("kept neuron indices must be distinct")


@torch.no_grad()
def prune_mlp(net: NeRFMLP, selections: dict[str, Selection],
              means: dict[str, torch.Tensor] | None = None) -> NeRFMLP:
    """A new, smaller :class:`NeRFMLP` keeping ``selections[name].keep`` of each named layer.

    Layers not in ``selections`` keep all neurons. ``means[name] (width,)``: calibration mean of
    each neuron's output, folded into the consumers' biases (none: removed neurons are dropped).
    """
    cfg = net.cfg
    if cfg.ranks:
        raise ValueError("a factorized (low-rank) network cannot be pruned; prune the teacher instead")
    lays = {l.name: l for l in layers(cfg)}
    unknown = set(selections) - set(lays)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; this network has {list(lays)}")
    W = {n: m.weight.detach().double().clone() for n, m in _named_linears(net)}
    B = {n: m.bias.detach().double().clone() for n, m in _named_linears(net)}
    rows = {n: None for n in W}     # kept output rows per Linear (None: all)
    cols = {n: None for n in W}     # kept input columns per Linear (None: all)
    for name, sel in selections.items():
        lay = lays[name]
        keep = sel.keep
        if int(keep.max()) >= lay.width or int(keep.min()) < 0:
            raise ValueError(f"layer {name} has {lay.width} neurons; cannot keep index {int(keep.max())}")
        mean = None if means is None else means.get(name)
        scale = sel.scale if sel.scale is not None else torch.ones(keep.numel(), dtype=torch.float64)
        for cons, off in lay.consumers:
            block = W[cons][:, off:off + lay.width]           # view into the consumer's weights
            if mean is not None:
                m = mean.double()
                B[cons] += block @ m - block[:, keep] @ (scale * m[keep])
            block[:, keep] *= scale
            n_in = W[cons].shape[1]
            c = cols[cons] if cols[cons] is not None else torch.arange(n_in)
            drop = torch.ones(lay.width, dtype=torch.bool)
            drop[keep] = False
            dropped = torch.nonzero(drop).flatten() + off
            cols[cons] = c[~torch.isin(c, dropped)]
        rows[lay.producer] = keep
    new_cfg = _pruned_config(cfg, {n: s.keep.numel() for n, s in selections.items()})
    new = NeRFMLP(new_cfg)
    for n, m in _named_linears(new):
        w, b = W[n], B[n]
        if rows[n] is not None:
            w, b = w[rows[n]], b[rows[n]]
        if cols[n] is not None:
            w = w[:, cols[n]]
        if tuple(w.shape) != tuple(m.weight.shape):
            raise AssertionError(f"{n}: surgery made {tuple(w.shape)}, config wants {tuple(m.weight.shape)}")
        m.weight.copy_(w.float())
        m.bias.copy_(b.float())
    new.eval()
    return new


def _named_linears(net: NeRFMLP):
    for n, m in net.named_modules():
        if isinstance(m, nn.Linear):
            yield n, m


def _pruned_config(cfg: MLPConfig, widths: dict[str, int]) -> MLPConfig:
    return replace(cfg,
                   widths=[widths.get(f"pts.{i}", w) for i, w in enumerate(cfg.widths)],
                   feature_width=widths.get("feature", cfg.feature_width),
                   view_widths=[widths.get(f"views.{i}", w) for i, w in enumerate(cfg.view_widths)])


def target_widths(cfg: MLPConfig, width: int | None = None, ratio: float | None = None,
                  widths: list[int] | None = None, feature_width: int | None = None,
                  view_width: int | None = None) -> dict[str, int]:
    """Resolve a shrink target into a width per prunable layer.

    Exactly one of ``width`` (every trunk layer and the feature layer), ``ratio`` (every layer
    times ``ratio``) or ``widths`` (one per trunk layer) is given. The view branch shrinks in
    proportion to the last trunk layer unless ``view_width`` is given; the feature layer follows
    the last trunk layer unless ``feature_width`` is given. Raises ``ValueError`` for a target
    larger than the layer, zero or negative.
    """
    given = [x is not None for x in (width, ratio, widths)]
    if sum(given) != 1:
        raise ValueError("give exactly one target: a width, a ratio or per-layer widths")
    D = len(cfg.widths)
    if width is not None:
        trunk = [width] * D
    elif ratio is not None:
        if not (0.0 < ratio <= 1.0):
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        trunk = [max(1, round(w * ratio)) for w in cfg.widths]
    else:
        if len(widths) != D:
            raise ValueError(f"the network has {D} trunk layers; got {len(widths)} widths")
        trunk = list(widths)
    out = {f"pts.{i}": w for i, w in enumerate(trunk)}
    if cfg.use_viewdirs:
        frac = trunk[-1] / cfg.widths[-1]
        out["feature"] = feature_width if feature_width is not None else (
            max(1, round(cfg.feature_width * ratio)) if ratio is not None else max(1, round(cfg.feature_width * frac)))
        for i, w in enumerate(cfg.view_widths):
            out[f"views.{i}"] = view_width if view_width is not None else max(1, round(w * (ratio if ratio is not None
                                                                                          else frac)))
    have = {l.name: l.width for l in layers(cfg)}
    for name, w in out.items():
        if not isinstance(w, int) or isinstance(w, bool):
            raise ValueError(f"width of {name} must be an integer, got {w!r}")
        if w <= 0:
            raise ValueError(f"width of {name} must be positive, got {w}")
        if w > have[name]:
            raise ValueError(f"layer {name} has {have[name]} neurons; cannot grow it to {w}")
    return out


def prune_model(model: NeRF, selections: dict[str, dict[str, Selection]],
                means: dict[str, dict[str, torch.Tensor]] | None = None) -> NeRF:
    """Apply :func:`prune_mlp` to the ``"coarse"`` and ``"fine"`` networks.

    Args:
        model: The NeRF to shrink (left unchanged).
        selections: Per network, per layer name, the neurons that survive.
        means: Per network, per layer name, the mean activation of each neuron ``(width,)``, to
            fold the removed neurons' mean contribution into the next layer's bias.

    Returns:
        A new, narrower :class:`NeRF` in eval mode.
    """
    nets = {"coarse": model.coarse, "fine": model.fine}
    new = {}
    for which, net in nets.items():
        if net is None:
            new[which] = None
            continue
        new[which] = prune_mlp(net, selections.get(which, {}), None if means is None else means.get(which))
    cfg = replace(model.cfg, coarse=new["coarse"].cfg, fine=None if new["fine"] is None else new["fine"].cfg)
    out = NeRF(cfg)
    out.coarse.load_state_dict(new["coarse"].state_dict())
    if new["fine"] is not None:
        out.fine.load_state_dict(new["fine"].state_dict())
    out.eval()
    return out


@torch.no_grad()
def widen_mlp(net: NeRFMLP, cfg: MLPConfig, generator: torch.Generator | None = None
              ) -> tuple[NeRFMLP, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Surgery's inverse: a wider :class:`NeRFMLP` with config ``cfg`` that computes exactly what
    ``net`` computes.

    Every hidden layer gains neurons with fresh random incoming weights (the default Linear
    initialisation) whose outgoing weights are zero, so the old neurons' outputs and the network's
    output are unchanged, while the new neurons' outgoing weights get gradients at once (their
    activations are not zero) and, unlike copies of old neurons, no two of them start alike.
    Returns the wider network and, for each Linear, the ``(rows, cols)`` index tensors where the
    old weight sits in the new one (``new.weight[rows][:, cols] == old.weight``), so that an
    optimizer's state can follow the weights.
    """
    old_cfg = net.cfg
    if (len(cfg.widths) != len(old_cfg.widths) or cfg.skips != old_cfg.skips
            or len(cfg.view_widths) != len(old_cfg.view_widths) or cfg.use_viewdirs != old_cfg.use_viewdirs
            or cfg.multires != old_cfg.multires or cfg.multires_views != old_cfg.multires_views):
        raise ValueError("widening keeps the depth, skips, view branch and encodings; only widths may change")
    old_l, new_l = layers(old_cfg), layers(cfg)
    for o, n in zip(old_l, new_l):
        if n.width < o.width:
            raise ValueError(f"layer {o.name} has {o.width} neurons; cannot widen it to {n.width}")
    with torch.random.fork_rng(devices=[]):   # the new neurons' draws leave the global RNG alone
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        new = NeRFMLP(cfg)
    old_mods = dict(_named_linears(net))
    rows = {n: torch.arange(m.weight.shape[0]) for n, m in old_mods.items()}
    cols = {n: torch.arange(m.weight.shape[1]) for n, m in old_mods.items()}
    for o, n in zip(old_l, new_l):
        grow = n.width - o.width
        for cons, off in o.consumers:
            c = cols[cons]
            cols[cons] = torch.where(c >= off + o.width, c + grow, c)
    maps = {}
    for name, m in _named_linears(new):
        old = old_mods[name]
        r, c = rows[name], cols[name]
        m.weight[r] = 0.0                       # old neurons read nothing from new ones
        m.weight[r[:, None], c[None, :]] = old.weight
        m.bias[r] = old.bias
        maps[name] = (r, c)
    new.train(net.training)
    return new, maps


def widen_model(model: NeRF, cfg: NeRFConfig, generator: torch.Generator | None = None
                ) -> tuple[NeRF, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """:func:`widen_mlp` on both networks of ``model``: a wider NeRF that computes what ``model`` computes.

    Args:
        model: The NeRF to widen (left unchanged).
        cfg: The wider architecture (same depth, skips, view branch and encodings).
        generator: Seeds the new neurons' weights (the global generator is left alone).

    Returns:
        ``(wide, maps)``: the wider :class:`NeRF` and, keyed by parameter name without
        ``.weight`` (``"coarse.pts_linears.0"``), the ``(rows, cols)`` index tensors where each old
        weight sits in the new one.
    """
    out = NeRF(cfg)
    maps = {}
    for which in ("coarse", "fine"):
        net, target = getattr(model, which), getattr(cfg, which)
        if net is None or target is None:
            if (net is None) != (target is None):
                raise ValueError("widening keeps the networks: both or neither need a fine one")
            continue
        wide, m = widen_mlp(net, target, generator)
        getattr(out, which).load_state_dict(wide.state_dict())
        maps.update({f"{which}.{k}": v for k, v in m.items()})
    out.train(model.training)
    return out, maps
