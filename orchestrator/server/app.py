"""Wiring: Ray, the replica pool, the executor and the gRPC server, from one config.

`Deployment` is what `inflection serve` and `inflection run` start, and what the tests
start once per session. Plain functions build each part from config; nothing here makes
decisions of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from agents import BUILTIN_PROGRAMS
from agents.tools import BUILTIN_TOOLS
from agents.yaml_loader import load_programs
from orchestrator.api.v1 import inflection_pb2 as pb
from orchestrator.api.v1 import inflection_pb2_grpc as pb_grpc
from orchestrator.config import (
    Backend,
    DeploymentConfig,
    RayConfig,
    ReplicasConfig,
    SchedulingPolicy,
    ServerConfig,
    SimEngineConfig,
)
from orchestrator.executor.executor import Executor, Tokenizer
from orchestrator.replicas.pool import ReplicaPool
from orchestrator.replicas.tiny_model import build_tiny_model, default_tiny_model_dir
from orchestrator.routing import PriorityPolicy, make_router
from orchestrator.server.auth import BearerTokenInterceptor
from orchestrator.server.servicer import OrchestratorServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name


def connect_ray(config: RayConfig) -> bool:
    """Join the configured cluster, a running one, or start a local one. Returns True
    when this process started Ray (and so should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"namespace": config.namespace, "log_to_driver": False}
    if config.address == "local":
        ray.init(address="local", num_cpus=config.num_cpus, include_dashboard=False, **common)
        return True
    if config.address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=config.address, **common)
        return True
    try:
        ray.init(address="auto", **common)
    except ConnectionError:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, **common)
    return True


class HfTokenizer:
    """The model's tokenizer, loaded in the orchestrator process so prompts are built
    as token ids without a Ray round trip."""

    def __init__(self, model: str) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(model)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=False)
        return ids

    @property
    def bos_token_id(self) -> int | None:
        bos: int | None = self._tok.bos_token_id
        return bos

    @property
    def vocab_size(self) -> int:
        return len(self._tok)


class ServingTokenizer(Tokenizer, Protocol):
    """What the executor and the servicer need of the model's tokenizer."""

    @property
    def vocab_size(self) -> int: ...


def sim_model_name(config: SimEngineConfig) -> str:
    """How a simulated replica's model is shown, e.g. "llama-3.1-8b on h100"."""
    gpus = f"{config.tensor_parallel_size}x {config.gpu}"
    return f"{config.model} on {gpus if config.tensor_parallel_size > 1 else config.gpu}"


def sim_tokenizer(config: SimEngineConfig) -> ServingTokenizer:
    """The simulated model's tokenizer (its catalog vocabulary; nothing downloaded).
    Builds the replica once here, so an unknown GPU or model, or a model that does not
    fit, fails before Ray starts (CatalogError, SimConfigError)."""
    from orchestrator.sim.build import build_replica
    from orchestrator.sim.tokens import SimTokenizer

    return SimTokenizer(build_replica(config).perf.hw.model.vocab)


def engines_for(config: DeploymentConfig) -> ReplicasConfig:
    """The replicas' config as the engines need it: program-aware priority turns on the
    engines' priority scheduling (vLLM refuses a priority without it)."""
    replicas = config.replicas
    if config.routing.priority is not PriorityPolicy.PROGRAM_AWARE:
        return replicas
    policy = {"scheduling_policy": SchedulingPolicy.PRIORITY}
    return replicas.model_copy(
        update={
            "engine": replicas.engine.model_copy(update=policy),
            "sim": replicas.sim.model_copy(update=policy),
        }
    )


def resolve_model(config: DeploymentConfig) -> str:
    """vLLM: the model path or id, building the tiny local model when none is configured.
    Sim: the simulated model's display name."""
    if config.replicas.backend is Backend.SIM:
        return sim_model_name(config.replicas.sim)
    if config.replicas.engine.model is not None:
        return config.replicas.engine.model
    return str(build_tiny_model(default_tiny_model_dir()))


async def start_grpc_server(
    servicer: OrchestratorServicer, config: ServerConfig
) -> tuple[grpc.aio.Server, int]:
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else []
    server = grpc.aio.server(interceptors=interceptors)
    pb_grpc.add_OrchestratorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, port


@dataclass(slots=True)
class Deployment:
    """A running orchestrator: replicas in Ray plus the gRPC server in front of them."""

    config: DeploymentConfig
    pool: ReplicaPool
    server: grpc.aio.Server
    port: int
    owns_ray: bool

    @property
    def address(self) -> str:
        return f"{self.config.server.host}:{self.port}"

    @classmethod
    async def start(cls, config: DeploymentConfig) -> Deployment:
        # Programs first: a bad program file should fail before any engine starts.
        programs = dict(BUILTIN_PROGRAMS)
        programs.update(
            load_programs(
                [Path(p) for p in config.programs], tools=BUILTIN_TOOLS, reserved=BUILTIN_PROGRAMS
            )
        )
        tokenizer: ServingTokenizer
        if config.replicas.backend is Backend.SIM:
            tokenizer = sim_tokenizer(config.replicas.sim)
            model = resolve_model(config)
            owns_ray = connect_ray(config.ray)
        else:
            owns_ray = connect_ray(config.ray)
            model = resolve_model(config)
            tokenizer = await asyncio.to_thread(HfTokenizer, model)
        pool = ReplicaPool(engines_for(config), model, config.ray.namespace)
        await pool.start()
        executor = Executor(
            pool,
            make_router(config.routing.router_settings()),
            tokenizer,
            programs,
            max_concurrent_calls_per_task=config.limits.max_concurrent_calls_per_task,
            priority=config.routing.priority_settings(),
            admission=config.admission,
        )
        servicer = OrchestratorServicer(executor, pool, config.limits, tokenizer.vocab_size)
        try:
            server, port = await start_grpc_server(servicer, config.server)
        except BaseException:
            await pool.shutdown()
            raise
        log.info("serving %s on %s:%d", SERVICE_NAME, config.server.host, port)
        return cls(config, pool, server, port, owns_ray)

    async def stop(self) -> None:
        await self.server.stop(grace=2.0)
        await self.pool.shutdown()
        if self.owns_ray:
            import ray

            ray.shutdown()
