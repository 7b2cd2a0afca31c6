"""Ray resources per replica (`plan_placement` is pure; nothing here starts Ray)."""

from __future__ import annotations

import pytest

from orchestrator.config import Backend, ReplicasConfig, SimEngineConfig, VllmEngineConfig
from orchestrator.replicas.pool import Placement, plan_placement


def replicas(tp: int = 1, use_gpus: bool | None = None, num_cpus: float = 2.0) -> ReplicasConfig:
    return ReplicasConfig(
        backend=Backend.VLLM,
        num_cpus=num_cpus,
        use_gpus=use_gpus,
        engine=VllmEngineConfig(tensor_parallel_size=tp),
    )


def test_cpu_cluster_reserves_cpus_only() -> None:
    assert plan_placement(replicas(), cluster_gpus=0) == Placement(2.0, 0.0, ())


def test_gpu_cluster_tp1_actor_holds_one_gpu() -> None:
    assert plan_placement(replicas(), cluster_gpus=8) == Placement(2.0, 1.0, ())


@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_gets_one_gpu_bundle_per_rank(tp: int) -> None:
    placement = plan_placement(replicas(tp=tp), cluster_gpus=8)
    assert placement.bundles == tuple({"GPU": 1.0, "CPU": 1.0} for _ in range(tp))
    # The engine's Ray workers hold the GPUs; the actor itself holds none.
    assert placement.num_gpus == 0.0
    assert placement.num_cpus == 0.0


def test_use_gpus_true_overrides_cluster_detection() -> None:
    # A cluster whose GPUs are not visible yet (autoscaling) still gets GPU replicas.
    assert plan_placement(replicas(use_gpus=True), cluster_gpus=0) == Placement(2.0, 1.0, ())
    placement = plan_placement(replicas(tp=4, use_gpus=True), cluster_gpus=0)
    assert len(placement.bundles) == 4
    assert all(bundle["GPU"] == 1.0 for bundle in placement.bundles)


@pytest.mark.parametrize("tp", [1, 4])
def test_use_gpus_false_stays_on_cpus_even_with_gpus(tp: int) -> None:
    assert plan_placement(replicas(tp=tp, use_gpus=False), cluster_gpus=8) == Placement(
        2.0, 0.0, ()
    )


@pytest.mark.parametrize("use_gpus", [None, True])
def test_simulated_replicas_never_take_gpus(use_gpus: bool | None) -> None:
    # Even a simulated tp=4 replica on a GPU cluster: its GPUs are simulated.
    config = ReplicasConfig(
        backend=Backend.SIM,
        num_cpus=0.5,
        use_gpus=use_gpus,
        sim=SimEngineConfig(tensor_parallel_size=4),
        engine=VllmEngineConfig(tensor_parallel_size=4),
    )
    assert plan_placement(config, cluster_gpus=8) == Placement(0.5, 0.0, ())
