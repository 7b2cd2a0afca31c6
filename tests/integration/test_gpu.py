"""The GPU path: replicas placed on GPUs (tensor-parallel replicas in placement groups).

Runs wherever CUDA GPUs are present (with the CUDA build of vLLM installed); skipped on
machines without one, such as CI."""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("tensor_parallel_size", [1, 2])
def test_gpu_replica_serves_a_task(live_server, tensor_parallel_size: int) -> None:  # type: ignore[no-untyped-def]
    import ray

    from orchestrator.client import Client
    from orchestrator.config import DeploymentConfig
    from orchestrator.server.app import Deployment

    if ray.cluster_resources().get("GPU", 0) < tensor_parallel_size:
        pytest.skip(f"needs {tensor_parallel_size} GPUs")
    config = DeploymentConfig.model_validate(
        {
            "server": {"port": 0},
            "ray": {"namespace": f"inflection-gpu-{tensor_parallel_size}"},
            "replicas": {
                "count": 1,
                "backend": "vllm",
                "use_gpus": True,
                "engine": {
                    "model": live_server.model_dir,
                    "tensor_parallel_size": tensor_parallel_size,
                    "gpu_memory_utilization": 0.3,
                },
            },
        }
    )
    deployment = asyncio.run_coroutine_threadsafe(
        Deployment.start(config), live_server.loop
    ).result(timeout=900)
    try:
        with Client(deployment.address, timeout=120) as client:
            result = client.run("plan_execute", "Plan a trip.", max_tokens=8)
        assert result.usage.output_tokens_total == 40
    finally:
        asyncio.run_coroutine_threadsafe(deployment.stop(), live_server.loop).result(timeout=120)
