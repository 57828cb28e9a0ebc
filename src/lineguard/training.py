"""The one training loop every learned detector uses: seeded, checkpointed each epoch, resumable exactly.

Trained methods differ only in their network and their loss; shuffling, the learning-rate schedule, progress,
checkpoints and devices are the same everywhere and live here. Determinism comes from two random streams,
both seeded from ``seed`` and both saved in every checkpoint: a ``torch.Generator`` handed to the loss (for
augmentation and synthetic defects) and the global torch RNG, forked for the run so that layers which draw
from it (dropout) are reproducible without leaking state to the caller. An interrupted run restarted with
``resume=True`` reloads weights, optimizer state, both RNG states and the loss history of the last finished
epoch and continues to exactly the weights an uninterrupted run reaches (bitwise on CPU).

A checkpoint is two files, no pickles: ``checkpoint.safetensors`` (model, optimizer tensors, RNG states as
uint8 tensors) and ``checkpoint.json`` (epoch, losses, optimizer hyper-parameters, the run's fingerprint).

Letters: N training items, B batch size.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lineguard.errors import LineguardError, ParameterError
from lineguard.progress import enabled as progress_enabled
from lineguard.progress import track

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
LossFn = Callable[[Tensor, torch.Generator], Tensor]  # (B, ...) batch, generator -> scalar loss
Schedule = Callable[[float], float]  # fraction of training done in [0, 1) -> learning-rate factor

_console = Console(stderr=True)


class CheckpointError(LineguardError, ValueError):
    """A checkpoint folder that cannot be resumed: torn, or written by a different run."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else as given (an absent CUDA raises clearly)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ParameterError(f"unknown device {device!r}; use 'cpu', 'cuda' (or 'cuda:N') or 'auto'") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ParameterError(f"device {device!r} is not supported; use 'cpu', 'cuda' (or 'cuda:N') or 'auto'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r} was asked for but CUDA is not available here; "
                             "use 'cpu' or 'auto'")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ParameterError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run a block on the global torch RNG seeded with ``seed`` (e.g. weight initialisation), restoring the
    caller's RNG state afterwards."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def one_cycle_cosine(warmup: float = 0.1) -> Schedule:
    """Linear warm-up over the first ``warmup`` of training, then cosine decay to zero (one cycle)."""
    if not 0 <= warmup < 1:
        raise ParameterError(f"warmup must be a fraction in [0, 1), got {warmup}")

    def factor(progress: float) -> float:
        if progress < warmup:
            return (progress + 1e-3) / warmup
        return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))

    return factor


def constant(progress: float) -> float:
    return 1.0


@dataclass
class TrainingRun:
    """What one call to :func:`train` did: the mean loss of every epoch, and the epoch it resumed after."""

    losses: list[float] = field(default_factory=list)
    resumed_after: int = 0
    seconds: float = 0.0


def batches_of(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A fresh random order of ``range(n)`` cut into batches; a short last batch is dropped (batch norm
    cannot use a batch of one) unless it is the only one."""
    order = torch.randperm(n, generator=generator)
    parts = list(order.split(batch_size))
    return parts[:-1] if len(parts) > 1 and len(parts[-1]) < batch_size else parts


def train(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, data: Tensor, *, epochs: int,
          batch_size: int, seed: int, schedule: Schedule = constant, checkpoint_dir: str | Path | None = None,
          resume: bool = False, fingerprint: dict[str, Any] | None = None,
          description: str = "training") -> TrainingRun:
    """Train ``model`` for ``epochs`` passes over ``data`` (N, ...) and leave it in eval mode.

    Each step draws a batch of rows (random order from the run's generator), moves it to the model's device,
    and minimises ``loss_fn(batch, generator)``; every group's learning rate is its initial one times
    ``schedule(step / total_steps)``. With ``checkpoint_dir`` the state is written after every epoch; with
    ``resume`` a checkpoint there is continued (no checkpoint yet: a fresh start). ``fingerprint`` (JSON-able)
    names the run, so that a checkpoint of a different configuration is refused rather than mixed in.
    """
    if epochs < 1 or batch_size < 1:
        raise ParameterError(f"epochs and batch_size must be at least 1, got epochs={epochs}, "
                             f"batch_size={batch_size}")
    if len(data) == 0:
        raise ValueError("no training data")
    if resume and checkpoint_dir is None:
        raise ParameterError("resume=True needs a checkpoint_dir to resume from")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    device = next(model.parameters()).device
    identity = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "n": len(data),
                "fingerprint": fingerprint or {}}
    identity = json.loads(json.dumps(identity))  # as it reads back from the checkpoint's JSON
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch = max(1, len(data) // batch_size)  # as many as batches_of gives
    total_steps = epochs * steps_per_epoch
    run = TrainingRun()
    start = time.perf_counter()
    with seeded(seed, device):
        generator = torch.Generator().manual_seed(seed)
        if resume and (folder / CHECKPOINT_STATE).exists():
            run.losses = load_checkpoint(folder, model, optimizer, generator, identity, device)
            run.resumed_after = len(run.losses)
            if progress_enabled():
                _console.print(f"{description}: resuming after epoch {run.resumed_after}/{epochs}")
        for epoch in range(run.resumed_after, epochs):
            model.train()
            total, count = 0.0, 0
            steps = batches_of(len(data), batch_size, generator)
            for i, rows in enumerate(track(steps, f"{description}: epoch {epoch + 1}/{epochs}")):
                progress = (epoch * steps_per_epoch + i) / total_steps
                for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = lr * schedule(progress)
                loss = loss_fn(data[rows].to(device), generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(rows), count + len(rows)
            run.losses.append(total / count)
            if progress_enabled():
                _console.print(f"{description}: epoch {epoch + 1}/{epochs} loss {run.losses[-1]:.5f} "
                               f"({time.perf_counter() - start:.0f} s)")
            if folder is not None:
                save_checkpoint(folder, model, optimizer, generator, identity, run.losses, device)
    model.eval()
    run.seconds = time.perf_counter() - start
    return run


# -- checkpoints -------------------------------------------------------------------------------------------
def _rng_tensors(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    states = {"rng.generator": generator.get_state(), "rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng.cuda"] = torch.cuda.get_rng_state(device)
    return states


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, identity: dict[str, Any], losses: list[float],
                    device: torch.device) -> None:
    """Write the state after ``len(losses)`` epochs; each file is replaced atomically, tensors first."""
    folder.mkdir(parents=True, exist_ok=True)
    optim = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in optim["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors.update(_rng_tensors(generator, device))
    epoch = str(len(losses))
    _replace(folder / CHECKPOINT_TENSORS, lambda path: save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"epoch": epoch}))
    state = {"epoch": len(losses), "losses": losses, **identity,
             "optimizer": {"param_groups": optim["param_groups"], "scalars": scalars}}
    _replace(folder / CHECKPOINT_STATE, lambda path: path.write_text(json.dumps(state, indent=1)))


def _replace(target: Path, write: Callable[[Path], object]) -> None:
    partial = target.with_name(target.name + ".partial")
    write(partial)
    os.replace(partial, target)


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, identity: dict[str, Any],
                    device: torch.device) -> list[float]:
    """Restore everything :func:`save_checkpoint` wrote; returns the loss history (one entry per epoch)."""
    state = json.loads((folder / CHECKPOINT_STATE).read_text())
    for key, expected in identity.items():
        if state.get(key) != expected:
            raise CheckpointError(f"{folder / CHECKPOINT_STATE} belongs to another run: {key} is "
                                  f"{state.get(key)!r} there but {expected!r} now; use another checkpoint "
                                  "folder or start without resume")
    path = folder / CHECKPOINT_TENSORS
    with safe_open(str(path), framework="pt") as f:  # a mismatch means a write was torn in between
        written_epoch = (f.metadata() or {}).get("epoch")
    if written_epoch != str(state["epoch"]):
        raise CheckpointError(f"{path} and {CHECKPOINT_STATE} disagree on the epoch (interrupted while "
                              f"writing); delete {folder} and start again")
    tensors = load_file(str(path))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    for index, entries in state["optimizer"]["scalars"].items():
        optim_state.setdefault(int(index), {}).update(entries)
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer"]["param_groups"]})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return [float(x) for x in state["losses"]]


# -- a trained network as a detector's learned state ------------------------------------------------------
class TrainedNetwork:
    """Mixin for detectors that learn a network: its weights are learned state (``network_``, a state_dict
    saved to safetensors by the base class) and the module is rebuilt from the parameters on first use.

    Subclasses implement ``build_network()`` (an untrained module for their parameters) and set ``device``.
    """

    device: str
    network_: dict[str, Tensor]

    def build_network(self) -> nn.Module:
        raise NotImplementedError

    def new_network(self, seed: int) -> nn.Module:
        """A freshly initialised network, the same for the same seed, on the detector's device."""
        with seeded(seed):
            network = self.build_network()
        return network.to(resolve_device(self.device))

    def keep_network(self, network: nn.Module) -> None:
        """Store trained weights as learned state and use this module from now on."""
        self.network_ = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        self._network = network.eval().requires_grad_(False)

    @property
    def network(self) -> nn.Module:
        if getattr(self, "_network", None) is None:
            network = self.build_network()
            network.load_state_dict(self.network_)
            self._network = network.eval().requires_grad_(False).to(resolve_device(self.device))
        return self._network
