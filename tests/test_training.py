"""The shared training loop: it trains, is deterministic for a seed, and resumes to the very same weights."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lineguard.training import (
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    CheckpointError,
    batches_of,
    one_cycle_cosine,
    resolve_device,
    seeded,
    train,
)

EPOCHS = 4


class Interrupted(Exception):
    """Stands in for Ctrl-C or a killed job in the middle of an epoch."""


def make_model(seed: int = 0) -> nn.Module:
    # dropout draws from the global RNG, so an exact resume must restore that stream too
    with seeded(seed):
        return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def make_data() -> torch.Tensor:
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(5))
    return torch.cat([x, x @ torch.tensor([[1.0], [-2.0], [0.5]])], dim=1)  # (N, 4): inputs, then target


def run(model: nn.Module, *, seed: int = 0, fail_at_step: int | None = None, optimizer: str = "adam", **kw):
    if optimizer == "adam":
        optim = torch.optim.Adam(model.parameters(), lr=0.05)
    else:
        optim = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    steps = 0

    def loss(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        nonlocal steps
        steps += 1
        if steps == fail_at_step:
            raise Interrupted
        noise = 0.01 * torch.randn(batch.shape[0], 3, generator=generator)  # uses the run's generator
        return (model(batch[:, :3] + noise) - batch[:, 3:]).pow(2).mean()

    return train(model, optim, loss, make_data(), epochs=EPOCHS, batch_size=8, seed=seed,
                 schedule=one_cycle_cosine(0.25), **kw)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_loss_and_leaves_eval_mode():
    model = make_model()
    history = run(model)
    assert len(history.losses) == EPOCHS and history.losses[-1] < 0.5 * history.losses[0]
    assert not model.training


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = make_model(), make_model(), make_model()
    run(a, seed=1), run(b, seed=1), run(c, seed=2)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))


def test_training_leaves_the_callers_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(make_model())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, optimizer):
    reference = make_model()
    full = run(reference, optimizer=optimizer, checkpoint_dir=tmp_path / "full")

    steps_per_epoch = 40 // 8
    with pytest.raises(Interrupted):  # dies in the middle of the third epoch
        run(make_model(), optimizer=optimizer, checkpoint_dir=tmp_path / "cut",
            fail_at_step=2 * steps_per_epoch + 3)
    assert json.loads((tmp_path / "cut" / CHECKPOINT_STATE).read_text())["epoch"] == 2

    resumed_model = make_model()
    resumed = run(resumed_model, optimizer=optimizer, checkpoint_dir=tmp_path / "cut", resume=True)
    assert resumed.resumed_after == 2
    assert resumed.losses == full.losses
    assert same(weights(resumed_model), weights(reference))


def test_checkpoint_is_safetensors_and_json_only(tmp_path):
    run(make_model(), checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_TENSORS, CHECKPOINT_STATE])
    state = json.loads((tmp_path / CHECKPOINT_STATE).read_text())
    assert state["epoch"] == EPOCHS and len(state["losses"]) == EPOCHS


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    model = make_model()
    run(model, checkpoint_dir=tmp_path)
    again = make_model()
    history = run(again, checkpoint_dir=tmp_path, resume=True)
    assert history.resumed_after == EPOCHS and same(weights(again), weights(model))


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a, b = make_model(), make_model()
    run(a)
    history = run(b, checkpoint_dir=tmp_path / "new", resume=True)
    assert history.resumed_after == 0 and same(weights(a), weights(b))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    run(make_model(), checkpoint_dir=tmp_path, fingerprint={"lr": 0.1})
    with pytest.raises(CheckpointError, match=r"checkpoint\.json.*seed"):
        run(make_model(), seed=9, checkpoint_dir=tmp_path, resume=True, fingerprint={"lr": 0.1})
    with pytest.raises(CheckpointError, match="fingerprint"):
        run(make_model(), checkpoint_dir=tmp_path, resume=True, fingerprint={"lr": 0.2})


def test_resume_refuses_a_torn_checkpoint(tmp_path):
    run(make_model(), checkpoint_dir=tmp_path)
    state = json.loads((tmp_path / CHECKPOINT_STATE).read_text())
    state["epoch"] -= 1  # as if the JSON of the previous epoch survived next to newer tensors
    (tmp_path / CHECKPOINT_STATE).write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="disagree on the epoch"):
        run(make_model(), checkpoint_dir=tmp_path, resume=True)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        run(make_model(), resume=True)
    with pytest.raises(ValueError, match="epochs"):
        train(make_model(), torch.optim.SGD(make_model().parameters(), lr=0.1), lambda b, g: b.sum(),
              make_data(), epochs=0, batch_size=4, seed=0)


def test_one_cycle_cosine_by_hand():
    schedule = one_cycle_cosine(0.1)
    assert schedule(0.05) == pytest.approx((0.05 + 1e-3) / 0.1)
    assert schedule(0.1) == pytest.approx(1.0)
    assert schedule(0.55) == pytest.approx(0.5)  # halfway through the cosine part
    assert schedule(0.999) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.899 / 0.9)))
    with pytest.raises(ValueError, match="warmup"):
        one_cycle_cosine(1.0)


def test_batches_cover_every_item_once_and_drop_a_short_tail():
    batches = batches_of(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(torch.cat(batches).tolist())) == 8
    assert [len(b) for b in batches_of(3, 4, torch.Generator())] == [3]  # a single short batch is kept


def test_devices():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


# -- every trained detector and the encoder resume through this loop to the same weights --------------------
def _autoencoder(**kw):
    from lineguard.methods.autoencoder import Autoencoder

    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    detector = Autoencoder(image_size=32, channels=[4, 8], latent=2, epochs=3, batch_size=2, **kw)
    return detector.fit(images).network_


def _dfr(**kw):
    from lineguard.methods.dfr import DFR

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return DFR(image_size=64, latent=4, epochs=3, patch_batch_size=32, **kw).fit(images).network_


def _cse(**kw):
    from lineguard.methods.cse import CSE

    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detector = CSE(image_size=64, dim=4, clusters=2, pairs=8, bank_patches=16, epochs=3, batch_size=2, **kw)
    return detector.fit(images).network_


def _encoder(checkpoint_dir, resume):
    from lineguard.methods.siamese import EncoderConfig, train_encoder

    categories = [torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    config = EncoderConfig(image_size=64, hidden=8, predictor_hidden=2)
    return train_encoder(categories, config, epochs=3, batch_size=2, checkpoint_dir=checkpoint_dir,
                         resume=resume).state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("fit", [_autoencoder, _dfr, _cse, _encoder],
                         ids=["autoencoder", "dfr", "cse", "encoder"])
def test_trained_methods_resume_to_the_same_weights(fit, tmp_path, monkeypatch):
    full = fit(checkpoint_dir=str(tmp_path / "full"), resume=False)

    import lineguard.training as training

    save = training.save_checkpoint

    def save_then_die_after_epoch_two(folder, model, optimizer, generator, identity, losses, device):
        save(folder, model, optimizer, generator, identity, losses, device)
        if len(losses) == 2:
            raise Interrupted

    monkeypatch.setattr(training, "save_checkpoint", save_then_die_after_epoch_two)
    with pytest.raises(Interrupted):
        fit(checkpoint_dir=str(tmp_path / "cut"), resume=False)
    monkeypatch.undo()
    resumed = fit(checkpoint_dir=str(tmp_path / "cut"), resume=True)
    assert same(resumed, full)
