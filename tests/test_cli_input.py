"""The command line on hostile input: one-line errors, unreadable files, locked and damaged results folders,
broken model folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lineguard.cli import app
from lineguard.io.store import DAMAGED_FILE, ResultStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def invoke(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_line_error(result, *words: str) -> str:
    """The error of a failed command: exit status 2, a single line naming ``words``, no traceback."""
    assert result.exit_code == 2, result.output + repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert all(word in errors[0] for word in words), (words, errors[0])
    return errors[0]


def rows(folder):
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def model(mvtec_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "m"
    invoke("fit", "--method", "knn", "--data", mvtec_folder, "--out", folder, "--image-size", 128,
           "--calibrate", "mu3sigma")
    return folder


@pytest.fixture
def good_images(mvtec_folder, tmp_path):
    folder = tmp_path / "line"
    folder.mkdir()
    for src in sorted((mvtec_folder / "test" / "good").glob("*.png"))[:2]:
        shutil.copy(src, folder / f"z_{src.name}")
    return folder


def test_a_chunk_of_only_unreadable_files_costs_nothing_else(model, good_images, tmp_path):
    for i in range(64):  # sorted first: the first chunk (4 × batch size) holds nothing readable
        (good_images / f"a_{i:02d}.png").write_bytes(b"")
    result = invoke("predict", model, good_images, "--out", tmp_path / "r", "--batch-size", 16)
    assert [os.path.basename(r["path"]) for r in rows(tmp_path / "r")] == sorted(
        p.name for p in good_images.glob("z_*"))
    assert "64 file(s) could not be read" in result.output and "a_63.png: empty file" in result.output


def test_a_single_unreadable_file_is_named(model, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = invoke("predict", model, tmp_path / "bad.png", "--out", tmp_path / "r")
    assert "bad.png: not a recognised image format" in result.output and "0 results" in result.output


def test_fit_saves_an_uncalibrated_model_when_no_held_out_image_can_be_read(mvtec_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(mvtec_folder, data)
    for path in (data / "train" / "good").glob("*.png"):
        path.write_bytes(b"")  # the held-out ones among them too
    result = run("fit", "--method", "knn", "--data", data, "--out", tmp_path / "m", "--image-size", 128)
    one_line_error(result, f"fit on {data}: none of the 6 image(s) could be read", ".png (empty file)")

    for path in sorted((mvtec_folder / "train" / "good").glob("*.png"))[:6]:  # the 6 fitted on, readable again
        shutil.copy(path, data / "train" / "good" / path.name)
    result = invoke("fit", "--method", "knn", "--data", data, "--out", tmp_path / "m", "--image-size", 128,
                    "--holdout", 0.25)
    text = " ".join(result.output.split())
    assert "could not calibrate on the held-out good images: none of the 2 calibration image(s) could be read" \
           in text and "006.png (empty file)" in text and "saved without thresholds" in text
    assert "image_threshold_" not in json.loads((tmp_path / "m" / "config.json").read_text())["state"]


def test_a_damaged_line_is_named_and_resume_keeps_every_intact_row(model, mvtec_folder, tmp_path):
    out = tmp_path / "r"
    invoke("predict", model, mvtec_folder / "test", "--out", out, "--no-report")
    before = rows(out)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:3]) + lines[3][:20] + "\n" + "".join(lines[4:]))
    result = invoke("predict", model, mvtec_folder / "test", "--out", out, "--no-report")
    text = " ".join(result.output.split())
    assert "damaged line(s) 4 moved to" in text and "7 already in" in text and "1 to score" in text
    after = rows(out)
    assert sorted(r["path"] for r in after) == sorted(r["path"] for r in before)
    assert len({r["map"] for r in after}) == len(after) and len({r["mask"] for r in after}) == len(after)
    assert (out / DAMAGED_FILE).read_text() == lines[3][:20] + "\n"


def test_a_locked_results_folder_stops_a_second_run_at_once(model, mvtec_folder, tmp_path):
    with ResultStore(tmp_path / "r"):
        one_line_error(run("predict", model, mvtec_folder / "test", "--out", tmp_path / "r"),
                       f"{tmp_path / 'r'} is being written by pid {os.getpid()} on ")
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.slow
def test_two_concurrent_runs_on_one_folder(model, mvtec_folder, tmp_path):
    """One proceeds, the other stops at once; the folder holds exactly one run's rows."""
    command = [sys.executable, "-m", "lineguard", "predict", str(model), str(mvtec_folder / "test"), "--out",
               str(tmp_path / "r"), "--no-report"]
    env = {**os.environ, "LINEGUARD_PROGRESS": "0"}
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    done = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in done) == [0, 2], done
    assert "is being written by pid" in next(err for code, err in done if code == 2)
    invoke("predict", model, mvtec_folder / "test", "--out", tmp_path / "alone", "--no-report")
    scores = {r["path"]: r["score"] for r in rows(tmp_path / "alone")}
    together = rows(tmp_path / "r")
    assert len(together) == len(scores) and {r["path"] for r in together} == set(scores)
    assert all(r["score"] == pytest.approx(scores[r["path"]], rel=1e-5) for r in together)


@pytest.mark.parametrize(("args", "words"), [
    (["--batch-size", "-1"], ["--batch-size must be at least 1, got -1"]),
    (["--batch-size", "0"], ["--batch-size must be at least 1, got 0"]),
    (["--device", "tpu"], ["unknown device 'tpu'"]),
    (["--param", "k=abc"], ["knn parameter k must be int, got 'abc' (str)"]),
    (["--param", "patch_size=2.5"], ["knn parameter patch_size must be int, got 2.5 (float)"]),
    (["--param", "levels=5"], ["knn parameter levels must be list[int] | None, got 5 (int)"]),
    (["--param", "k"], ["--param: expected KEY=VALUE, got 'k'"]),
])
def test_bad_options_are_one_line_naming_the_value(mvtec_folder, tmp_path, args, words):
    one_line_error(run("evaluate", "--method", "knn", "--data", mvtec_folder, "--image-size", 128, *args), *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(mvtec_folder):
    one_line_error(run("evaluate", "--method", "knn", "--data", mvtec_folder, "--device", "cuda"),
                   "'cuda' was asked for but CUDA is not available")


def test_serve_checks_its_options_before_loading_anything(model, tmp_path):
    one_line_error(run("serve", model, "--port", 99999), "--port must be between 1 and 65535, got 99999")
    one_line_error(run("serve", model, "--max-upload-mb", -1), "--max-upload-mb must be positive, got -1")
    one_line_error(run("serve", model, "--max-pixels", 10**10), "max_pixels (--max-pixels) must be between 1 and")
    result = run("serve", tmp_path / "nowhere")
    one_line_error(result, "nowhere is not a lineguard model folder")
    assert "serving" not in result.output  # said only once the model is loaded


def test_a_dataset_without_test_folder_says_so(mvtec_folder, tmp_path):
    shutil.copytree(mvtec_folder / "train", tmp_path / "d" / "train")
    one_line_error(run("fit", "--method", "knn", "--data", tmp_path / "d", "--out", tmp_path / "m"),
                   f"{tmp_path / 'd' / 'test'}: no such folder")


def test_non_utf8_file_names_are_escaped_in_every_output(model, good_images, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    shutil.copy(next(good_images.iterdir()), good_images / name)
    for _ in range(2):  # a rerun too
        result = invoke("predict", model, good_images, "--out", tmp_path / "r")
    page = (tmp_path / "r" / "report" / "index.html").read_text(encoding="utf-8")
    assert "caf\\xe9.png" in page and len(rows(tmp_path / "r")) == 3
    assert os.path.exists(next(r["path"] for r in rows(tmp_path / "r") if "caf" in r["path"]))
    assert result.exit_code == 0


def corrupt(model, tmp_path, change) -> object:
    folder = tmp_path / "broken"
    shutil.copytree(model, folder)
    change(folder)
    return folder


def set_config(**changes):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))
    return change


def drop_state(key):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        del config["state"][key]
        (folder / "config.json").write_text(json.dumps(config))
    return change


def retype_bank(folder):
    tensors = load_file(folder / "state.safetensors")
    tensors["memory_bank_"] = tensors["memory_bank_"].to(torch.int8)
    save_file(tensors, folder / "state.safetensors")


@pytest.mark.parametrize(("change", "file", "words"), [
    (lambda f: (f / "state.safetensors").write_bytes((f / "state.safetensors").read_bytes()[:100]),
     "state.safetensors", "not a readable safetensors file"),
    (lambda f: (f / "config.json").write_text('{"format_version": 1, "method": }'), "config.json",
     "not valid JSON"),
    (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json", "expected a JSON object, got a list"),
    (drop_state("pixel_threshold_"), "config.json", "thresholds are incomplete: pixel_threshold_ missing"),
    (set_config(method=None), "config.json", "'method' must be a JSON string"),
    (set_config(params=[]), "config.json", "'params' must be a JSON object"),
    (set_config(method="nope"), "config.json", "unknown method 'nope'"),
    (set_config(state={"predict": "x"}), "config.json", "'predict' is not learned state of KNN"),
    (set_config(params={"weights": "/etc/passwd"}), "config.json", "points outside the model folder"),
    (set_config(params={"weights": "../m/state.safetensors"}), "config.json", "points outside the model folder"),
    (retype_bank, "state.safetensors", "'memory_bank_' is torch.int8, expected torch.float32"),
])
def test_broken_model_folders_are_one_line_naming_the_file(model, mvtec_folder, tmp_path, change, file, words):
    folder = corrupt(model, tmp_path, change)
    one_line_error(run("predict", folder, mvtec_folder / "test", "--out", tmp_path / "r"), str(folder / file),
                   words)


def test_a_damaged_thresholds_file_is_named(model, good_images, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "thresholds.json").write_text('{"image_threshold": ')
    one_line_error(run("predict", model, good_images, "--out", tmp_path / "r"),
                   f"{tmp_path / 'r' / 'thresholds.json'}: not a thresholds file")


def test_fit_with_a_test_batch_method_says_how_to_use_it(mvtec_folder, tmp_path):
    result = CliRunner().invoke(app, ["fit", "--method", "testbatch", "--data", str(mvtec_folder), "--out",
                                      str(tmp_path / "m")])
    assert result.exit_code == 2 and "lineguard predict --method testbatch" in " ".join(result.output.split())
