"""A Ray cluster to work on, and what its workers need to rebuild a scorer.

``--ray`` alone follows Ray's own rule: join the cluster ``RAY_ADDRESS`` names, else the one ``ray start`` last
started on this machine, else start Ray on this machine for the run. ``--ray-address`` names a cluster: ``auto``
(the one on this machine), ``HOST:PORT`` or ``ray://HOST:PORT``, or ``local`` (always a new one here, for this
run only). A process that is already connected (a notebook, a test) keeps its
connection.

Workers rebuild the scorer themselves, once each. A model folder travels through Ray's object store as its
files' bytes and is loaded from a temporary copy on the worker, so the model needs no shared file system; the
images must be readable from every node under the same paths. A test-batch method travels as its name and
parameters.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lineguard.errors import LineguardError, ParameterError
from lineguard.extras import require


class ClusterError(LineguardError, RuntimeError):
    """No Ray cluster at the address given, or one too small for the workers asked for."""


@dataclass(frozen=True)
class Cluster:
    """Where to run and how wide: ``workers`` actors (or shards), each with one CPU and ``gpus_per_worker``."""

    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ParameterError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ParameterError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")


def ray_module() -> ModuleType:
    return require("ray", "--ray")


@contextmanager
def connected(cluster: Cluster) -> Iterator[ModuleType]:
    """The ``ray`` module, connected to ``cluster`` (and disconnected after, unless it was connected before);
    ClusterError when the cluster cannot take ``cluster.workers`` workers."""
    ray = ray_module()
    if ray.is_initialized():
        check_capacity(ray, cluster)
        yield ray
        return
    starts_here = cluster.address == "local" or (cluster.address is None and not os.environ.get("RAY_ADDRESS"))
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING,
                 **({"include_dashboard": False} if starts_here else {}))
    except ConnectionError as exc:
        raise ClusterError(f"no Ray cluster at {cluster.address or os.environ.get('RAY_ADDRESS')}: {exc}") from None
    try:
        check_capacity(ray, cluster)
        yield ray
    finally:
        ray.shutdown()


def check_capacity(ray: ModuleType, cluster: Cluster) -> None:
    """Refuse more workers than the cluster has CPUs (or GPUs) for: Ray would wait for them for ever."""
    resources = ray.cluster_resources()
    for name, each in (("CPU", 1.0), ("GPU", cluster.gpus_per_worker)):
        if each and resources.get(name, 0) < each * cluster.workers:
            raise ClusterError(f"--workers {cluster.workers} needs {each * cluster.workers:g} {name}s; the Ray "
                               f"cluster has {resources.get(name, 0):g}")


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder, by its path inside it."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


@dataclass
class ScorerSource:
    """How a worker rebuilds the scorer: a model folder's files (an object reference to their bytes), or a
    test-batch method's name and parameters."""

    model: Any = None  # ObjectRef of folder_files(...)
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_model(cls, ray: ModuleType, folder: Path) -> ScorerSource:
        return cls(model=ray.put(folder_files(folder)))

    @classmethod
    def of_method(cls, detector: Any) -> ScorerSource:
        return cls(method=detector.name, params=detector.get_params())

    def build(self, *, use_gpu: bool = False) -> tuple[Any, tempfile.TemporaryDirectory | None]:
        """The scorer, and the temporary copy of the model or export folder it reads from (kept while the scorer
        lives)."""
        from lineguard import load
        from lineguard.methods import create

        if self.model is None:
            detector, copy = create(self.method, **self.params), None
        else:
            copy = tempfile.TemporaryDirectory(prefix="lineguard-model-")
            for name, data in ray_module().get(self.model).items():
                target = Path(copy.name, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            detector = load(copy.name)
        if use_gpu and not detector.array_input and "device" in detector.param_names():
            detector.device = "cuda"  # before first use: the feature extractor is built then
        return detector, copy
