"""The original NeRF MLP with per-layer widths (nerf-pytorch compatible parameter names).

Trunk: ``D`` Linear+ReLU layers over the encoded point; the encoded point is concatenated
*before* the trunk features after each layer index in ``skips`` (nerf-pytorch: after layer 4).
Heads (with view directions): ``alpha_linear`` (density, from the trunk output),
``feature_linear`` (no activation), then ``views_linears`` (Linear+ReLU over
``[feature, encoded view direction]``) and ``rgb_linear``.

Every hidden width is stored per layer so that a pruned network, whose layers differ in
width, is rebuilt with exactly the shapes it holds. A hidden layer named in ``ranks`` (``pts.i``,
``feature``, ``views.i``) is a low-rank pair :class:`LowRankLinear` (``down`` then ``up``) of that
rank: same input and output width, fewer multiply-adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from nerfexport.model.encoding import PositionalEncoding, encoded_dim


@dataclass
class MLPConfig:
    """Architecture of one NeRF network.

    ``widths[i]`` is the output width of trunk layer ``i``; ``feature_width`` the width of
    ``feature_linear``; ``view_widths[i]`` the width of view-branch layer ``i``.
    """

    widths: list[int] = field(default_factory=lambda: [256] * 8)
    skips: list[int] = field(default_factory=lambda: [4])
    feature_width: int = 256
    view_widths: list[int] = field(default_factory=lambda: [128])
    multires: int = 10
    multires_views: int = 4
    use_viewdirs: bool = True
    ranks: dict[str, int] = field(default_factory=dict)   # low-rank hidden layers: name -> rank

    @classmethod
    def uniform(cls, depth: int = 8, width: int = 256, use_viewdirs: bool = True, **kw) -> "MLPConfig":
        """The nerf-pytorch layout: ``depth`` layers of ``width``, view branch of ``width // 2``."""
        kw.setdefault("skips", [s for s in (4,) if s < depth - 1])
        return cls(widths=[width] * depth, feature_width=width, view_widths=[max(1, width // 2)],
                   use_viewdirs=use_viewdirs, **kw)

    @property
    def input_ch(self) -> int:
        return encoded_dim(3, self.multires)

    @property
    def input_ch_views(self) -> int:
        return encoded_dim(3, self.multires_views) if self.use_viewdirs else 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown network config keys: {sorted(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.widths:
            raise ValueError("a network needs at least one trunk layer")
        for name, ws in (("widths", self.widths), ("view_widths", self.view_widths)):
            if any((not isinstance(w, int)) or w <= 0 for w in ws):
                raise ValueError(f"{name} must be positive integers, got {ws}")
        if self.use_viewdirs and (not isinstance(self.feature_width, int) or self.feature_width <= 0):
            raise ValueError(f"feature_width must be a positive integer, got {self.feature_width}")
        if any(s < 0 or s >= len(self.widths) - 1 for s in self.skips):
            raise ValueError(f"skips {self.skips} must index trunk layers before the last")
        if not isinstance(self.ranks, dict):
            raise ValueError("ranks must be a table of layer name -> rank")
        shapes = {name: (i, o) for name, _, i, o in self.linear_shapes()}
        for name, r in self.ranks.items():
            if name not in shapes or name in ("alpha", "rgb", "output"):
                raise ValueError(f"ranks name {name!r}, which is not a hidden layer of this network")
            if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= min(shapes[name]):
                raise ValueError(f"rank of {name} must be an integer from 1 to {min(shapes[name])}, not {r!r}")

    def linear_shapes(self) -> list[tuple[str, str, int, int]]:
        """Every Linear of the network as ``(name, attribute path, in, out)``, input to output."""
        out = [(f"pts.{i}", f"pts_linears.{i}", n_in, w)
               for i, (n_in, w) in enumerate(zip(self.trunk_in_dims(), self.widths))]
        if not self.use_viewdirs:
            return out + [("output", "output_linear", self.widths[-1], 4)]
        out += [("alpha", "alpha_linear", self.widths[-1], 1),
                ("feature", "feature_linear", self.widths[-1], self.feature_width)]
        v_in = [self.feature_width + self.input_ch_views] + self.view_widths[:-1]
        out += [(f"views.{i}", f"views_linears.{i}", n_in, w)
                for i, (n_in, w) in enumerate(zip(v_in, self.view_widths))]
        return out + [("rgb", "rgb_linear", self.view_widths[-1], 3)]

    def layer_macs(self) -> dict[str, int]:
        """Multiply-adds per evaluated point of each Linear (a low-rank pair: ``r * (in + out)``)."""
        return {name: (self.ranks[name] * (i + o) if name in self.ranks else i * o)
                for name, _, i, o in self.linear_shapes()}

    def macs(self) -> int:
        """Multiply-adds per evaluated point of the whole network (its cost per sample)."""
        return sum(self.layer_macs().values())

    def trunk_in_dims(self) -> list[int]:
        """Input width of each trunk layer."""
        dims = [self.input_ch]
        for i in range(len(self.widths) - 1):
            dims.append(self.widths[i] + (self.input_ch if i in self.skips else 0))
        return dims


class LowRankLinear(nn.Module):
    """``y = up(down(x))``: a Linear of rank ``r`` stored as ``down`` (in -> r, no bias) and
    ``up`` (r -> out, with the bias); ``(N, in) -> (N, out)`` in ``r * (in + out)`` multiply-adds."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def make_linear(cfg: MLPConfig, name: str, n_in: int, n_out: int) -> nn.Module:
    """The module of layer ``name``: :class:`LowRankLinear` when ``cfg.ranks`` names it, else ``nn.Linear``."""
    r = cfg.ranks.get(name)
    return LowRankLinear(n_in, n_out, r) if r else nn.Linear(n_in, n_out)


class NeRFMLP(nn.Module):
    """One NeRF network: ``(pts (N,3), viewdirs (N,3)) -> raw (N,4)`` = ``[rgb_logits, sigma_raw]``.

    Activations (sigmoid on rgb, ReLU on density) are applied by the volume renderer, as
    in nerf-pytorch, so that training can add noise to the raw density.
    """

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = PositionalEncoding(cfg.multires)
        self.embed_views = PositionalEncoding(cfg.multires_views)
        ins = cfg.trunk_in_dims()
        self.pts_linears = nn.ModuleList(make_linear(cfg, f"pts.{n}", i, o)
                                         for n, (i, o) in enumerate(zip(ins, cfg.widths)))
        w_out = cfg.widths[-1]
        if cfg.use_viewdirs:
            self.feature_linear = make_linear(cfg, "feature", w_out, cfg.feature_width)
            self.alpha_linear = nn.Linear(w_out, 1)
            v_in = [cfg.feature_width + cfg.input_ch_views] + cfg.view_widths[:-1]
            self.views_linears = nn.ModuleList(make_linear(cfg, f"views.{n}", i, o)
                                               for n, (i, o) in enumerate(zip(v_in, cfg.view_widths)))
            self.rgb_linear = nn.Linear(cfg.view_widths[-1], 3)
        else:
            self.output_linear = nn.Linear(w_out, 4)

    def trunk(self, pts: torch.Tensor) -> torch.Tensor:
        """``(N,3)`` points -> ``(N, widths[-1])`` trunk features."""
        x = self.embed(pts)
        h = x
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i in self.cfg.skips:
                h = torch.cat((x, h), dim=-1)
        return h

    def forward(self, pts: torch.Tensor, viewdirs: torch.Tensor | None = None) -> torch.Tensor:
        """The raw outputs at ``N`` points.

        Args:
            pts: Points. Tensor with shape ``(N, 3)``.
            viewdirs: Unit view directions (unused without a view branch). Tensor with shape ``(N, 3)``.

        Returns:
            ``[rgb_logits, sigma_raw]`` before their activations. Tensor with shape ``(N, 4)``.
        """
        h = self.trunk(pts)
        if not self.cfg.use_viewdirs:
            return self.output_linear(h)
        alpha = self.alpha_linear(h)
        h = torch.cat((self.feature_linear(h), self.embed_views(viewdirs)), dim=-1)
        for layer in self.views_linears:
            h = F.relu(layer(h))
        return torch.cat((self.rgb_linear(h), alpha), dim=-1)

    def density(self, pts: torch.Tensor) -> torch.Tensor:
        """The density at ``N`` points; needs no view direction.

        Args:
            pts: Points. Tensor with shape ``(N, 3)``.

        Returns:
            ``relu(sigma_raw)``. Tensor with shape ``(N,)``.
        """
        h = self.trunk(pts)
        raw = self.alpha_linear(h) if self.cfg.use_viewdirs else self.output_linear(h)[..., 3:]
        return F.relu(raw[..., 0])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class NeRFConfig:
    """Everything a checkpoint needs besides the weights: both architectures, the scene
    bounds and background, the NDC flag and the sample counts used to render it."""

    coarse: MLPConfig = field(default_factory=MLPConfig)
    fine: MLPConfig | None = field(default_factory=MLPConfig)
    near: float = 2.0
    far: float = 6.0
    white_bkgd: bool = True
    ndc: bool = False
    n_coarse: int = 64
    n_fine: int = 128
    camera: dict = field(default_factory=dict)  # H, W, focal of the training views (informative)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coarse"] = self.coarse.to_dict()
        d["fine"] = None if self.fine is None else self.fine.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NeRFConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        d = dict(d)
        d["coarse"] = MLPConfig.from_dict(d["coarse"])
        d["fine"] = None if d.get("fine") is None else MLPConfig.from_dict(d["fine"])
        cfg = cls(**d)
        if not (cfg.far > cfg.near):
            raise ValueError(f"far ({cfg.far}) must exceed near ({cfg.near})")
        if cfg.n_coarse < 2 or cfg.n_fine < 0:
            raise ValueError(f"bad sample counts n_coarse={cfg.n_coarse} n_fine={cfg.n_fine}")
        return cfg


class NeRF(nn.Module):
    """Coarse and (optional) fine networks with their shared configuration."""

    def __init__(self, cfg: NeRFConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.coarse = NeRFMLP(cfg.coarse)
        self.fine = NeRFMLP(cfg.fine) if cfg.fine is not None else None

    @property
    def render_fine(self) -> NeRFMLP:
        """The network that evaluates the fine samples (the coarse one when there is no fine)."""
        return self.fine if self.fine is not None else self.coarse
