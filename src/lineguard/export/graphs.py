"""A fitted detector as one ``nn.Module``: (N, 3, S, S) images in [0, 1] -> (N,) image scores, (N, S, S) maps.

Every step of ``predict`` is inside, built from the detector's own parts (its backbone module, its extractor's
aggregation, its learned state, the shared scoring functions), so the graph computes what the detector
computes: input normalisation (inside the backbone), features, the search or the model, the image score, the
map's upsampling and blur. One builder per method, registered by name; a method without one is refused with
:class:`NotExportableError` saying why.

Letters: N images, S working size, D feature dimension, h × w the feature grid, P = h · w patches per image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lineguard.errors import LineguardError
from lineguard.methods.base import Detector

GraphBuilder = Callable[[Detector], nn.Module]
_BUILDERS: dict[str, GraphBuilder] = {}


TEXT_PROMPT_METHODS = ("anomalyclip", "winclip", "winclip+", "prompts")  # refused, each with the same reason


class NotExportableError(LineguardError, ValueError):
    """A detector that cannot become a graph; the message says why."""


def graph_builder(*names: str) -> Callable[[GraphBuilder], GraphBuilder]:
    """Decorator: ``builder(detector) -> nn.Module`` (a module class, or a function) makes the graph of the
    methods ``names``."""

    def decorate(builder: GraphBuilder) -> GraphBuilder:
        twice = sorted(_BUILDERS.keys() & set(names))
        if twice:
            raise ValueError(f"export graph of {', '.join(twice)} registered twice")
        _BUILDERS.update(dict.fromkeys(names, builder))
        return builder

    return decorate


def exportable_methods() -> list[str]:
    _load_builders()
    return sorted(_BUILDERS)


def refusal(name: str, uses_normal_images: bool) -> str | None:
    """Why method ``name`` cannot be exported, or None when it can."""
    _load_builders()
    if name in _BUILDERS:
        return None
    if name in TEXT_PROMPT_METHODS:
        return (f"{name} scores images against text prompts through a CLIP-style model (text embeddings, "
                "windows or prompt learners); no graph is built for it yet. Exportable methods: "
                f"{', '.join(exportable_methods())}")
    if not uses_normal_images:
        return (f"{name} scores a batch against itself: its reference is built from the very images it is "
                "asked to score, so there is no fixed model to put in a graph. What could be exported is its "
                "feature extractor (backbone and patch aggregation, most of its compute), with the batch-"
                "against-batch scoring outside the graph; lineguard does not export that half on its own")
    return (f"{name} has no export graph; exportable methods: {', '.join(exportable_methods())}")


def scoring_graph(detector: Detector) -> nn.Module:
    """The fitted ``detector`` as a module from (N, 3, S, S) images to (scores (N,), maps (N, S, S)), in eval
    mode on the detector's device. Raises :class:`NotExportableError` for methods that cannot be exported."""
    reason = refusal(detector.name, detector.uses_normal_images)
    if reason:
        raise NotExportableError(f"cannot export {detector.name}: {reason}")
    detector.check_fitted()
    return _BUILDERS[detector.name](detector).eval().requires_grad_(False)


def _load_builders() -> None:
    """Importing the builder modules registers them (they import this one, so not at its top)."""
    from lineguard.export import bank_graphs, model_graphs  # noqa: F401


class Features(nn.Module):
    """A detector's feature extractor as a module (the backbone normalises its input itself)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.extractor = detector.extractor
        self.backbone = self.extractor.backbone  # registered, so its weights are the graph's initializers
        self.head = self.extractor.head if isinstance(self.extractor.head, nn.Module) else None

    def levels(self, images: Tensor) -> list[Tensor]:
        """(N, 3, S, S) -> [(N, C_l, h_l, w_l)] the backbone's maps."""
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D, h, w) the extractor's patch features."""
        return self.extractor.patches(self.levels(images))


def buffer(module: nn.Module, name: str, value: Tensor) -> Tensor:
    """Register ``value`` (a copy, float32 if floating) as a buffer of ``module``: learned state of the graph."""
    value = value.detach().clone()
    module.register_buffer(name, value.float() if value.is_floating_point() else value)
    return getattr(module, name)


def with_affine_batch_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose batch norms without affine parameters have weight 1 and bias 0: the same
    values (× 1 and + 0 are exact), but the exporter needs a weight to know the channel count by (it refuses
    an affine-free batch norm on features whose channels it cannot infer, as CSE's embedder has)."""
    network = copy.deepcopy(network)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.affine:
            module.weight = nn.Parameter(torch.ones(module.num_features), requires_grad=False)
            module.bias = nn.Parameter(torch.zeros(module.num_features), requires_grad=False)
    return network


def gather_rows(rows: Tensor, index: Tensor) -> Tensor:
    """(N, P, D) rows, (N,) one index per image -> (N, D) the chosen row of each image."""
    return rows.gather(1, index[:, None, None].expand(-1, 1, rows.shape[2]))[:, 0]


def quantile(values: Tensor, q: float) -> Tensor:
    """(N, P) -> (N,): ``torch.quantile(values, q, dim=1)`` (linear interpolation) from a sort, which graphs
    have: the position q·(P − 1) in float32, between two order statistics, blended as ``lerp`` blends. Bit for
    bit torch's for few-shot's 0.25 (and most q); otherwise torch rounds the weight a little differently,
    within 10⁻⁴ of the gap between the two order statistics."""
    ordered = values.sort(dim=1).values
    position = torch.tensor(q, dtype=torch.float32) * (values.shape[1] - 1)
    below = int(position)
    weight = float(position - below)
    low, high = ordered[:, below], ordered[:, min(below + 1, values.shape[1] - 1)]
    if weight < 0.5:
        return low + weight * (high - low)
    return high - (high - low) * (1 - weight)


def dims(features: Tensor) -> tuple[int, int, int]:
    """(N, D, h, w) -> (D, h, w), as Python ints: static in the graph (the working size is fixed)."""
    return int(features.shape[1]), int(features.shape[2]), int(features.shape[3])
