"""What a shrink is asked for: the method, the cost target, the budget and the device
(:class:`ShrinkSpec`), the target resolved once for one teacher (:class:`Targets`), and how the
students are evaluated (:class:`EvalSpec`). Nothing here runs a network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, get_args

from nerfexport.model.mlp import MLPConfig, NeRF
from nerfexport.model.surgery import _pruned_config, target_widths
from nerfexport.shrink import lowrank, scoring

AUTO = "auto"
LOWRANK = "lowrank"
#: what ``method = "auto"`` tries: each makes a student and the one that agrees best with the
#: teacher on training pixels is distilled (docs/shrink.md: on a real, fully trained model
#: ``lowrank`` wins by 10 dB; a grown teacher, ``make teacher``, keeps its narrow phase in the
#: neurons that ``magnitude`` keeps)
AUTO_CANDIDATES = (LOWRANK, "coreset", "magnitude", "data-coreset")
#: every value ``ShrinkSpec.method`` accepts
Method = Literal["uniform", "magnitude", "magnitude-in", "magnitude-out", "activation", "coreset", "data-coreset",
                 "lowrank", "auto"]
SPEC_METHODS: tuple[str, ...] = get_args(Method)
assert SPEC_METHODS == scoring.METHODS + (LOWRANK, AUTO)
TARGETS = ("width", "ratio", "widths", "rank", "budget")
#: where the teacher bank and the distillation run: ``auto`` is CUDA when torch sees a GPU
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
NETWORKS = ("coarse", "fine")


@dataclass(frozen=True)
class Targets:
    """A :class:`ShrinkSpec`'s target resolved once for one teacher, per network (``"coarse"``,
    ``"fine"``): computed by :meth:`ShrinkSpec.targets`.

    Attributes:
        macs: Multiply-adds per evaluated point each network may cost.
        widths: Pruning: the width of every prunable layer (``{"pts.0": 128, ..., "feature": 128,
            "views.0": 64}``); ``None`` when pruning cannot meet the target (see ``why_not``).
        ranks: ``rank`` target: the rank of every factorized layer; else ``None``.
        why_not: Why ``widths`` is ``None`` (the ``ValueError`` that :meth:`pruning` raises).
    """

    macs: dict[str, int]
    widths: dict[str, dict[str, int]] | None = None
    ranks: dict[str, dict[str, int]] | None = None
    why_not: str = ""

    def pruning(self, which: str = "coarse") -> dict[str, int]:
        """Width per prunable layer of network ``which``; raises ``ValueError`` when pruning
        cannot meet the target."""
        if self.widths is None:
            raise ValueError(self.why_not)
        return self.widths[which]


@dataclass
class ShrinkSpec:
    """What to shrink to and how. Exactly one target is set:

    * ``width``: the cost of the network with every trunk and the feature layer ``width`` wide
      (pruning: exactly that; ``lowrank``: ranks that cost no more);
    * ``ratio``: the cost of keeping that fraction of every layer's neurons;
    * ``widths``: per trunk layer (a recipe's);
    * ``rank``: ``lowrank`` only, that rank in every hidden layer where it saves;
    * ``budget``: a fraction of the teacher's multiply-adds per point (pruning: the widest uniform
      width within it).
    """

    method: Method = LOWRANK
    width: int | None = None
    ratio: float | None = None
    widths: list[int] | None = None
    rank: int | None = None
    budget: float | None = None
    feature_width: int | None = None
    view_width: int | None = None
    finetune: int = 0               # distillation steps (a ceiling when ``minutes`` is set)
    minutes: float | None = None    # distillation time budget
    bank_rays: int | None = None    # teacher rays queried for distillation (default: DistillConfig's)
    calib_rays: int = 1024
    calib_points: int = 65536       # at most this many points per network for the statistics
    seed: int = 0
    fold: bool = True               # fold removed neurons' calibration means into the next bias
    fit: lowrank.FitMode = "rrr"    # lowrank: reduced-rank regression on the student's inputs, or pca
    relu_passes: int = 2            # lowrank: refits that ignore what a ReLU removes (docs/shrink.md)
    visible: float = 0.9            # lowrank: share of the sample weight on what pixels see (docs/shrink.md)
    device: Device = "auto"         # the teacher bank and the distillation (calibration and fits: CPU)

    def validate(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(SPEC_METHODS)}")
        if sum(getattr(self, k) is not None for k in TARGETS) != 1:
            raise ValueError("give exactly one target: --width, --ratio, --rank, --budget or per-layer widths "
                             "from a recipe")
        if self.rank is not None and self.method not in (LOWRANK, AUTO):
            raise ValueError(f"--rank is a target of the lowrank method, not of {self.method}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank must be a positive whole number, not {self.rank!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, (int, float))
                                        or not 0 < self.budget <= 1):
            raise ValueError(f"budget must be a fraction of the teacher's cost in (0, 1], not {self.budget!r}")
        if isinstance(self.finetune, bool) or not isinstance(self.finetune, int) or self.finetune < 0:
            raise ValueError("fine-tune steps must be a whole number, zero or more")
        if self.minutes is not None and (isinstance(self.minutes, bool) or not isinstance(self.minutes, (int, float))
                                         or not 0 < self.minutes <= 24 * 60):
            raise ValueError(f"minutes must be a positive number of minutes (at most a day), not {self.minutes!r}")
        if self.bank_rays is not None and (isinstance(self.bank_rays, bool) or not isinstance(self.bank_rays, int)
                                           or not 1 <= self.bank_rays <= 4_000_000):
            raise ValueError(f"bank_rays must be a whole number from 1 to 4,000,000, not {self.bank_rays!r}")
        if self.calib_rays < 1:
            raise ValueError("calibration needs at least one ray")
        if self.fit not in lowrank.FIT_MODES:
            raise ValueError(f"fit must be one of {', '.join(lowrank.FIT_MODES)}, not {self.fit!r}")
        if not isinstance(self.visible, (int, float)) or not 0 <= self.visible <= 1:
            raise ValueError(f"visible must be in [0, 1], not {self.visible!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")

    def widths_for(self, cfg: MLPConfig) -> dict[str, int]:
        """Pruning: the width of every prunable layer of a network with config ``cfg``. Raises
        ``ValueError`` for a target the network cannot meet."""
        if self.rank is not None:
            raise ValueError("--rank is a target of the lowrank method only")
        if self.budget is not None:
            return target_widths(cfg, width=_widest_within(cfg, self.budget_macs(cfg)))
        return target_widths(cfg, width=self.width, ratio=self.ratio, widths=self.widths,
                             feature_width=self.feature_width, view_width=self.view_width)

    def budget_macs(self, cfg: MLPConfig) -> int:
        """The multiply-adds per point this target allows a network with config ``cfg``."""
        if self.budget is not None:
            return int(cfg.macs() * self.budget)
        if self.rank is not None:
            return replace(cfg, ranks=lowrank.uniform_ranks(cfg, self.rank)).macs()
        return _pruned_config(cfg, self.widths_for(cfg)).macs()

    def check(self, cfg: MLPConfig) -> None:
        """Raise ``ValueError`` unless the target fits a network with config ``cfg``."""
        if self.rank is None:
            self.budget_macs(cfg)

    def targets(self, model: NeRF) -> Targets:
        """The target resolved once for the networks of ``model`` (the teacher). Raises
        ``ValueError`` for a target that does not fit them (as :meth:`check`); a budget that no
        pruned width meets leaves ``widths`` ``None`` (``lowrank`` can still meet it).

        Args:
            model: The teacher; its coarse and (when present) fine networks are resolved.

        Returns:
            :class:`Targets`, keyed by ``"coarse"`` and ``"fine"``.
        """
        cfgs = {w: getattr(model, w).cfg for w in NETWORKS if getattr(model, w) is not None}
        if self.rank is not None:
            ranks = {w: lowrank.uniform_ranks(c, self.rank) for w, c in cfgs.items()}
            return Targets({w: replace(c, ranks=ranks[w]).macs() for w, c in cfgs.items()}, None, ranks,
                           "--rank is a target of the lowrank method only")
        if self.budget is None:   # a width, ratio or widths: the cost is the pruned network's
            widths = {w: self.widths_for(c) for w, c in cfgs.items()}
            return Targets({w: _pruned_config(c, widths[w]).macs() for w, c in cfgs.items()}, widths)
        macs = {w: int(c.macs() * self.budget) for w, c in cfgs.items()}
        if self.method == LOWRANK:
            return Targets(macs, None, None, "a budget target of the lowrank method has no pruning widths")
        try:
            return Targets(macs, {w: target_widths(c, width=_widest_within(c, macs[w])) for w, c in cfgs.items()})
        except ValueError as e:
            return Targets(macs, None, None, str(e))

    def to_dict(self) -> dict:
        return asdict(self)


def _widest_within(cfg: MLPConfig, macs: int) -> int:
    """The widest uniform pruning width whose network costs at most ``macs`` a point."""
    best = 0
    for w in range(1, max(cfg.widths) + 1):
        if _pruned_config(cfg, target_widths(cfg, width=w)).macs() <= macs:
            best = w
    if best == 0:
        raise ValueError(f"no pruned width fits a budget of {macs:,} multiply-adds a point")
    return best


@dataclass
class EvalSpec:
    """How :func:`nerfexport.shrink.pipeline.shrink_pipeline` scores the students on held-out
    views, before and after distillation, at the scene's resolution.

    Attributes:
        views: The first ``views`` test views; ``None`` evaluates nothing.
        samples: ``(coarse, fine)`` samples per ray; ``None`` (or ``None`` entries): the model's.
        pixels: That many fixed random pixels of the views (a cheap, unbiased PSNR estimate; no
            SSIM); ``None``: every pixel, rendered in torch (slow at 400x400).
    """

    views: int | None = 10
    samples: tuple[int | None, int | None] | None = None
    pixels: int | None = 4096


def resolve_device(name: Device = "auto"):
    """The ``torch.device`` of ``ShrinkSpec.device``: ``auto`` is CUDA when torch sees a GPU, else
    the CPU. Raises ``ValueError`` (one line) for ``cuda`` without one.

    Args:
        name: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``torch.device("cuda")`` or ``torch.device("cpu")``.
    """
    from nerfexport.train.device import pick_device
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {name!r}")
    try:
        return pick_device(name)
    except RuntimeError:
        raise ValueError("--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                         "use --device cpu or auto") from None
