"""train-prompts, then zero-shot predict and evaluate with the learned prompts, from the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lineguard.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_train_prompts_then_predict_and_evaluate_zero_shot(mvtec_folder, tmp_path):
    prompts, results = tmp_path / "prompts", tmp_path / "results"
    trained = invoke("train-prompts", "--method", "prompts", "--data", mvtec_folder, "--out", prompts,
                     "--image-size", 64, "--epochs", 2, "--batch-size", 4, "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    info = json.loads((prompts / "prompts.json").read_text())
    assert info["method"] == "prompts" and info["epochs"] == 2 and len(info["losses"]) == 2
    assert (prompts / "prompts.safetensors").is_file() and (prompts / "checkpoint").is_dir()
    predicted = invoke("predict", "--method", "prompts", "--param", f"prompts={prompts}", "--image-size", 64,
                       mvtec_folder / "test", "--out", results, "--no-report")
    assert predicted.exit_code == 0, predicted.output
    assert len((results / "results.jsonl").read_text().splitlines()) == 8
    evaluated = invoke("evaluate", "--method", "prompts", "--param", f"prompts={prompts}", "--image-size", 64,
                       "--data", mvtec_folder)
    assert evaluated.exit_code == 0 and "image AUROC" in evaluated.output


def test_train_prompts_refuses_a_method_without_prompts(mvtec_folder, tmp_path):
    result = invoke("train-prompts", "--method", "knn", "--data", mvtec_folder, "--out", tmp_path / "p")
    assert result.exit_code == 2 and "knn learns no prompts" in result.output


def test_the_cli_leaves_each_method_its_own_backbone_unless_one_is_given():
    from lineguard.cli.options import build_detector

    common = {"image_size": None, "weights": None, "device": None, "seed": None, "params": None}
    assert build_detector("winclip", backbone=None, **common).backbone == "clip-vit-b16-plus-240"
    assert build_detector("knn", backbone=None, **common).backbone == "effnet-lite0"
    assert build_detector("winclip", backbone="clip-vit-b16", **common).backbone == "clip-vit-b16"
