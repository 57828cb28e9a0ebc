"""predict and fit on a real local Ray cluster (``ray.init(num_cpus=2)``), against the single-machine path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lineguard.methods import load
from tests.distributed.conftest import RAY_SIZE, invoke, rows_of, same_results

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster() -> str:
    """A 2-CPU Ray cluster for the module; its address, for drivers in other processes."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never a running one
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_predict_on_ray_writes_the_rows_of_a_local_run(cluster, ray_model, line_images, tmp_path):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    invoke("predict", ray_model, line_images, "--out", local, "--no-report", "--batch-size", 3)
    result = invoke("predict", ray_model, line_images, "--out", distributed, "--no-report", "--batch-size", 3,
                    "--ray", "--workers", 2)
    assert "broken.png" in result.output and "not a recognised image format" in result.output
    same_results(local, distributed)
    assert {r["decision"] for r in rows_of(distributed)} == {"ok", "defect"}
    again = invoke("predict", ray_model, line_images, "--out", distributed, "--no-report", "--ray")
    assert "16 already in" in again.output and len(rows_of(distributed)) == 16


@pytest.mark.slow
def test_predict_on_ray_runs_an_export_as_locally(cluster, ray_model, line_images, tmp_path):
    pytest.importorskip("onnxruntime")
    export, local, distributed = tmp_path / "export", tmp_path / "local", tmp_path / "ray"
    invoke("export", ray_model, "--out", export)
    invoke("predict", export, line_images, "--out", local, "--no-report")
    invoke("predict", export, line_images, "--out", distributed, "--no-report", "--ray", "--workers", 2)
    same_results(local, distributed)


@pytest.mark.slow
def test_test_batches_on_ray_each_decide_as_a_local_run(cluster, line_images, tmp_path):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    common = ("predict", "--method", "testbatch", line_images, "--image-size", RAY_SIZE, "--batch-by", "folder",
              "--no-report")
    invoke(*common, "--out", local)
    invoke(*common, "--out", distributed, "--ray")
    for camera in ("cam0", "cam1"):
        same_results(local / camera, distributed / camera)
        thresholds = [(folder / camera / "thresholds.json").read_text() for folder in (local, distributed)]
        assert thresholds[0] == thresholds[1]
        assert all(r["decision"] in ("ok", "defect") for r in rows_of(distributed / camera))
    by_count = invoke(*common, "--out", tmp_path / "counted", "--ray", "--batch-by", 5)
    assert sorted(p.name for p in (tmp_path / "counted").iterdir()) == ["batch-0000", "batch-0001", "batch-0002",
                                                                       "batch-0003"]
    assert "too few to decide" in by_count.output  # the last batch holds 2 images


@pytest.mark.slow
def test_fit_on_ray_keeps_the_local_bank(cluster, mvtec_folder, tmp_path):
    """knn keeps every row, so the shards' union is the local bank; PatchCore's merged coreset has its size."""
    for method in ("knn", "patchcore"):
        common = ("fit", "--method", method, "--data", mvtec_folder, "--image-size", RAY_SIZE, "--calibrate", "none")
        invoke(*common, "--out", tmp_path / f"{method}-local")
        invoke(*common, "--out", tmp_path / f"{method}-ray", "--ray", "--workers", 2)
        local, distributed = load(tmp_path / f"{method}-local"), load(tmp_path / f"{method}-ray")
        assert distributed.memory_bank_.shape == local.memory_bank_.shape
    assert torch.equal(local_sorted := torch.sort(load(tmp_path / "knn-local").memory_bank_, dim=0).values,
                       torch.sort(load(tmp_path / "knn-ray").memory_bank_, dim=0).values), local_sorted.shape


def many_images(line_images: Path, folder: Path, copies: int) -> Path:
    """``copies`` copies of the line's readable images: a run long enough to interrupt."""
    folder.mkdir()
    readable = sorted(p for p in line_images.rglob("*.png") if p.name != "broken.png")
    for i in range(copies):
        for source in readable:
            (folder / f"{i:02d}-{source.parent.name}-{source.name}").write_bytes(source.read_bytes())
    return folder


def start_driver(cluster: str, *args: object) -> subprocess.Popen:
    """``lineguard predict --ray-address CLUSTER ARGS`` in a child process, as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "lineguard", "predict", *map(str, args), "--ray-address", cluster,
                             "--no-report", "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "LINEGUARD_PROGRESS": "0"})


def wait_for_rows(results: Path, count: int, driver: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (results / "results.jsonl").exists() or len(rows_of(results)) < count:
        assert driver.poll() is None, driver.stdout.read().decode()
        assert time.monotonic() < deadline, "no rows in time"
        time.sleep(0.05)


def inspect_actors() -> list[dict]:
    """The cluster's inspection actors (Ray's actor table: class, state, pid, restarts, node)."""
    from ray._private.state import actors  # the state API without the dashboard

    return [a for a in actors().values() if "InspectWorker" in a["ActorClassName"]]


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_restarted_and_no_row_is_lost(cluster, ray_model, line_images, tmp_path):
    images, results = many_images(line_images, tmp_path / "images", 8), tmp_path / "results"
    driver = start_driver(cluster, ray_model, images, "--out", results, "--workers", 2)
    wait_for_rows(results, 2, driver)
    victim = next(a for a in inspect_actors() if a["State"] == "ALIVE")
    os.kill(victim["Pid"], signal.SIGKILL)
    output = driver.communicate(timeout=180)[0].decode()
    assert driver.returncode == 0, output
    paths = [r["path"] for r in rows_of(results)]
    assert len(paths) == len(set(paths)) == 128 and all((results / r["map"]).exists() for r in rows_of(results))
    assert next(a for a in inspect_actors() if a["ActorID"] == victim["ActorID"])["NumRestarts"] >= 1


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_to_the_rows_of_a_local_run(cluster, ray_model, line_images, tmp_path):
    images, results, local = many_images(line_images, tmp_path / "images", 6), tmp_path / "ray", tmp_path / "local"
    driver = start_driver(cluster, ray_model, images, "--out", results, "--workers", 2)
    wait_for_rows(results, 3, driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 3 <= len(rows_of(results)) < 96  # cut short
    resumed = invoke("predict", ray_model, images, "--out", results, "--no-report", "--batch-size", 1, "--ray")
    assert "already in" in resumed.output
    invoke("predict", ray_model, images, "--out", local, "--no-report", "--batch-size", 1)
    same_results(local, results)
