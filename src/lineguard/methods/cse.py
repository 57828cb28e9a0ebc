"""CSE, contrastively selected embedding: a linear embedder on frozen features, then k-means as the reference.

Meant for surfaces and textures, where a normal patch has many look-alikes and a memory bank of every
training patch is mostly redundant: k-means over the normal patches keeps ``clusters`` centroids, and a
patch scores its distance to the nearest one, so scoring costs the same however many images were used for
training.

Which directions of the backbone feature space matter for that distance is learned contrastively. Each
training step plants synthetic defects (Perlin-noise masks blending in foreign texture, ``features/perlin.py``)
in half of a batch of normal images; the other half, clean, is a small reference bank. Every patch of the
defective half is scored as at test time, by its distance to the nearest bank patch, and a pairwise ranking
loss (a smooth AUROC) asks each defect patch to score above each normal patch of the same images. The
embedder is a 1 × 1 convolution that starts as the identity on standardised features (batch norm without
affine parameters), so training re-weights and mixes feature channels — it *selects* an embedding — instead
of learning one from scratch: a deeper embedder learns the synthetic defects and forgets the real ones.

Letters: B images, D backbone feature dimension, E embedding dimension, h × w the feature grid,
K clusters, P sampled patch pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lineguard.errors import ParameterError
from lineguard.extras import require
from lineguard.features.extractor import fit_size
from lineguard.features.patches import flatten_patches
from lineguard.features.perlin import downsample_masks, plant_defects
from lineguard.methods.base import ImageInput, as_batches, register
from lineguard.methods.grid import GridDetector
from lineguard.params import POSITIVE, Interval
from lineguard.progress import track
from lineguard.training import TrainedNetwork, one_cycle_cosine, resolve_device, train


def selection_embedder(channels: int, dim: int) -> nn.Sequential:
    """(B, D, h, w) -> (B, E, h, w): standardise every channel (running statistics of all training batches),
    then a 1 × 1 convolution initialised to keep the first E channels unchanged (the identity when E = D)."""
    conv = nn.Conv2d(channels, dim, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(dim, channels)[..., None, None])
        conv.bias.zero_()
    return nn.Sequential(nn.BatchNorm2d(channels, affine=False, momentum=None), conv)


def ranking_loss(normal_scores: Tensor, defect_scores: Tensor, temperature: float) -> Tensor:
    """Smooth AUROC: mean over all (normal, defect) pairs of softplus((log s_n − log s_d) / T).

    (P_n,), (P_d,) positive scores -> scalar. Logarithms make it blind to the embedding's overall scale, so
    it cannot be lowered by merely inflating distances.
    """
    gap = normal_scores.clamp_min(1e-6).log()[:, None] - defect_scores.clamp_min(1e-6).log()[None, :]
    return F.softplus(gap / temperature).mean()


def sample(indices: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` draws with replacement from a 1-D tensor of indices."""
    return indices[torch.randint(len(indices), (count,), generator=generator)]


@register
class CSE(TrainedNetwork, GridDetector):
    name = "cse"
    parameter_constraints = {"dim": [POSITIVE], "clusters": [POSITIVE], "pairs": [POSITIVE],
                             "bank_patches": [POSITIVE], "temperature": [Interval(float, 0, None, "neither")],
                             "batch_size": [Interval(int, 2, None)],  # a defective half and a clean half
                             "kmeans_samples": [POSITIVE], "epochs": [POSITIVE],
                             "lr": [Interval(float, 0, None, "neither")]}
    search_bank = "centroids_"

    def __init__(self, *, backbone: str = "effnet-lite0", levels: list[int] | None = None, image_size: int = 256,
                 patch_size: int = 3, dim: int | None = None, clusters: int = 1024, temperature: float = 0.1,
                 pairs: int = 512, bank_patches: int = 4096, epochs: int = 3, lr: float = 1e-3,
                 batch_size: int = 16, kmeans_samples: int = 200_000, sigma: float = 4.0, seed: int = 0,
                 checkpoint_dir: str | None = None, resume: bool = False, weights: str | None = None,
                 device: str = "cpu"):
        self.backbone = backbone
        self.levels = levels
        self.image_size = image_size
        self.patch_size = patch_size
        self.dim = dim
        self.clusters = clusters
        self.temperature = temperature
        self.pairs = pairs
        self.bank_patches = bank_patches
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.kmeans_samples = kmeans_samples
        self.sigma = sigma
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.weights = weights
        self.device = device

    def build_network(self) -> nn.Module:
        channels = sum(level.channels for level in self.extractor.backbone.levels)
        return selection_embedder(channels, self.dim or channels)

    def training_step(self, network: nn.Module, images: Tensor, generator: torch.Generator) -> Tensor:
        """(B, 3, S, S) uint8 normal images -> ranking loss of the defective half against the clean half."""
        images = images.float() / 255
        half = len(images) // 2
        defective, masks = plant_defects(images[:half], generator)
        features = self.extractor(torch.cat([defective, images[half:]])).clone()  # (B, D, h, w), autograd-able
        embeddings = network(features)  # (B, E, h, w)
        cover = downsample_masks(masks, tuple(features.shape[-2:]))  # (B/2, h, w) defect fraction per cell
        near = F.max_pool2d(cover[:, None], 3, stride=1, padding=1)[:, 0]  # cells touching a defect
        queries = flatten_patches(embeddings[:half])  # (B/2·h·w, E)
        normal, defect = torch.nonzero(near.flatten() == 0)[:, 0], torch.nonzero(cover.flatten() >= 0.25)[:, 0]
        if len(defect) == 0 or len(normal) == 0:  # every mask missed the grid: nothing to rank
            return embeddings.sum() * 0
        bank = flatten_patches(embeddings[half:])
        bank = bank[sample(torch.arange(len(bank)), self.bank_patches, generator).to(bank.device)]
        chosen = torch.cat([sample(normal, self.pairs, generator), sample(defect, self.pairs, generator)])
        scores = torch.cdist(queries[chosen.to(queries.device)], bank).amin(dim=1)  # (2P,)
        return ranking_loss(scores[:self.pairs], scores[self.pairs:], self.temperature)

    def _fit(self, images: ImageInput) -> None:
        # (N, 3, S, S) uint8: a quarter of the memory of floats, and the image files are 8-bit anyway
        data = torch.cat([(fit_size(b.float(), self.image_size) * 255).round().to(torch.uint8)
                          for b in as_batches(images, self.batch_size)])
        network = self.new_network(self.seed)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.lr)
        step = lambda batch, generator: self.training_step(network, batch, generator)  # noqa: E731
        train(network, optimizer, step, data, epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
              schedule=one_cycle_cosine(), checkpoint_dir=self.checkpoint_dir, resume=self.resume,
              fingerprint={"method": self.name, **{k: v for k, v in self.get_params().items()
                                                   if k not in ("checkpoint_dir", "resume", "device")}},
              description="cse")
        self.keep_network(network)
        self.centroids_ = self._kmeans(data)

    @torch.no_grad()
    def _embed(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, E, h, w)."""
        return self.network(self.extractor(images.to(resolve_device(self.device))))

    def _kmeans(self, data: Tensor) -> Tensor:
        """K-means centroids (K, E) of at most ``kmeans_samples`` normal patch embeddings (a seeded draw)."""
        embeddings = torch.cat([flatten_patches(self._embed(b.float() / 255)).cpu()
                                for b in data.split(self.batch_size)])  # (N·h·w, E)
        generator = torch.Generator().manual_seed(self.seed)
        chosen = embeddings[torch.randperm(len(embeddings), generator=generator)[:self.kmeans_samples]]
        if len(chosen) < self.clusters:
            raise ParameterError(f"{self.clusters} clusters need at least as many normal patches, "
                                 f"got {len(chosen)}; lower clusters")
        faiss = require("faiss", "cse's k-means")  # only here: without faiss every other method still works
        kmeans = faiss.Kmeans(chosen.shape[1], self.clusters, niter=25, seed=self.seed)
        kmeans.train(chosen.contiguous().numpy())
        return torch.from_numpy(kmeans.centroids).clone()

    def features(self, batches: Iterable[Tensor], description: str) -> Iterator[Tensor]:
        """(B, E, h, w) embeddings of each batch."""
        for batch in track(batches, description):
            yield self._embed(fit_size(batch.float(), self.image_size))

    def patch_scores(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        distances, _ = self.index.search(flatten_patches(features).cpu(), k=1)  # (B·h·w, 1)
        return distances[:, 0].view(n, h, w)
