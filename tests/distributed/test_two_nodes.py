"""predict, fit and test batches on a two-node Ray cluster on this machine (two nodes of one CPU each)."""

from __future__ import annotations

import pytest
import torch

from lineguard.methods import load
from tests.distributed.conftest import RAY_SIZE, invoke, same_results

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_predict_spreads_over_both_nodes_and_writes_the_local_rows(two_nodes, ray_model, line_images, tmp_path):
    from ray._private.state import actors

    local, distributed = tmp_path / "local", tmp_path / "ray"
    invoke("predict", ray_model, line_images, "--out", local, "--no-report", "--batch-size", 2)
    invoke("predict", ray_model, line_images, "--out", distributed, "--no-report", "--batch-size", 2, "--ray",
           "--workers", 2)
    same_results(local, distributed)
    nodes = {a["Address"]["NodeID"] for a in actors().values() if "InspectWorker" in a["ActorClassName"]}
    assert len(nodes) == 2


def test_fit_and_test_batches_on_two_nodes(two_nodes, mvtec_folder, line_images, tmp_path):
    common = ("fit", "--method", "knn", "--data", mvtec_folder, "--image-size", RAY_SIZE, "--calibrate", "none")
    invoke(*common, "--out", tmp_path / "local")
    invoke(*common, "--out", tmp_path / "ray", "--ray", "--workers", 2)
    banks = [torch.sort(load(tmp_path / name).memory_bank_, dim=0).values for name in ("local", "ray")]
    assert torch.equal(*banks)

    batches = ("predict", "--method", "testbatch", line_images, "--image-size", RAY_SIZE, "--batch-by", 8,
               "--no-report")
    for where, options in (("local", ()), ("ray", ("--ray",))):
        result = invoke(*batches, "--out", tmp_path / f"batches-{where}", *options)
        assert "batch-0002: not scored: testbatch needs at least 2 images" in " ".join(result.output.split())
    for batch in ("batch-0000", "batch-0001"):  # 8 images, then 7 and the broken file
        same_results(tmp_path / "batches-local" / batch, tmp_path / "batches-ray" / batch)
