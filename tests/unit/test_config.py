"""Loading deployment config: good files load, bad ones name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import (
    Backend,
    ConfigError,
    DeploymentConfig,
    SchedulingPolicy,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as failed:
        load_config(path)
    return str(failed.value)


def test_values_from_the_file_reach_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
replicas:
  count: 3
  engine:
    max_model_len: 2048
    scheduling_policy: priority
    extra_args: {block_size: 32}
server:
  port: 0
  auth_token: s3cret
limits:
  max_tokens_per_call: 512
""",
    )
    config = load_config(path)
    assert config.replicas.count == 3
    assert config.replicas.engine.max_model_len == 2048
    assert config.replicas.engine.scheduling_policy is SchedulingPolicy.PRIORITY
    assert config.replicas.engine.extra_args == {"block_size": 32}
    assert config.server.port == 0
    assert config.server.auth_token == "s3cret"
    assert config.limits.max_tokens_per_call == 512
    assert config.ray == DeploymentConfig().ray


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text)) == DeploymentConfig()


def test_unknown_key_names_the_file_and_the_dotted_path(tmp_path: Path) -> None:
    path = write(tmp_path, "replicas:\n  engine:\n    max_modle_len: 2048\n")
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert "replicas.engine.max_modle_len" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "replica:\n  count: 2\n"))
    assert "replica: Extra inputs are not permitted" in message


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "replicas:\n  count: many\n")
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    assert "replicas.count: " in message
    assert "integer" in message


def test_out_of_range_value_names_the_field_and_the_bound(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "server:\n  port: 70000\n"))
    assert "server.port: " in message
    assert "65535" in message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "replicas:\n  count: 0\nlimits:\n  bogus: 1\n"))
    assert "replicas.count" in message
    assert "limits.bogus" in message


def test_bad_enum_value_names_the_field(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "replicas:\n  engine:\n    scheduling_policy: lifo\n"))
    assert "replicas.engine.scheduling_policy" in message


def test_section_that_is_not_a_mapping_names_the_section(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "server: 50051\n"))
    assert "server: " in message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "replicas: [1, 2\n")
    message = load_error(path)
    assert message.startswith(f"{path}: not valid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path) == f"{path}: expected a mapping at the top level"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    message = load_error(path)
    assert message.startswith(f"{path}: cannot read")
    assert "No such file" in message


def test_config_errors_are_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"deploy\.yaml"):
        load_config(write(tmp_path, "[]\n"))


def test_the_default_deployment_simulates_llama_8b_on_h100s() -> None:
    replicas = DeploymentConfig().replicas
    assert replicas.backend is Backend.SIM
    assert (replicas.sim.gpu, replicas.sim.model) == ("h100", "llama-3.1-8b")
    assert replicas.sim.time_scale == 1.0


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("local.yaml", Backend.SIM),
        ("local-vllm.yaml", Backend.VLLM),
        ("gpu-example.yaml", Backend.VLLM),
    ],
)
def test_the_shipped_cluster_configs_load(name: str, backend: Backend) -> None:
    config = load_config(REPO / "cluster" / name)
    assert config.replicas.backend is backend


def test_a_typo_in_the_sim_section_names_the_dotted_path(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "replicas:\n  backend: sim\n  sim:\n    gpus: h100\n"))
    assert "replicas.sim.gpus" in message


def test_an_unknown_backend_names_the_field(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "replicas:\n  backend: tpu\n"))
    assert "replicas.backend" in message and "'sim'" in message


@pytest.mark.parametrize("name", ["local.yaml", "local-vllm.yaml"])
def test_the_local_configs_start_a_private_cluster_unless_run_as_a_ray_job(name: str) -> None:
    from orchestrator.server.app import ray_target

    ray = load_config(REPO / "cluster" / name).ray
    # `inflection serve --config cluster/local.yaml` on a host where some Ray runs:
    assert ray_target(ray, {}).address is None
    # `ray job submit ... inflection serve --config cluster/local.yaml`: the job's cluster.
    assert ray_target(ray, {"RAY_ADDRESS": "10.1.2.3:6379"}).address == "10.1.2.3:6379"
    assert ray.connect_timeout_s == 15


def test_every_server_and_ray_field_is_described() -> None:
    from orchestrator.config import RayConfig, ServerConfig

    for model in (RayConfig, ServerConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_server_tls_files_are_read_at_load(tmp_path: Path) -> None:
    from tests.tls_certs import make_pki

    pki = make_pki(tmp_path)
    good = f"server:\n  tls:\n    cert: {pki.cert}\n    key: {pki.key}\n    client_ca: {pki.ca}\n"
    tls = load_config(write(tmp_path, good)).server.tls
    assert tls is not None and tls.client_ca == pki.ca
    missing = good.replace(str(pki.ca), str(tmp_path / "nope.pem"))
    assert "server.tls.client_ca: Value error, cannot read" in load_error(write(tmp_path, missing))
    (tmp_path / "notes.txt").write_text("not a certificate")
    not_pem = good.replace(str(pki.cert), str(tmp_path / "notes.txt"))
    assert "notes.txt is not a PEM file" in load_error(write(tmp_path, not_pem))


def test_a_key_that_does_not_match_its_cert_fails_start_up_by_name(tmp_path: Path) -> None:
    from orchestrator.server.app import StartupError, bind_grpc_server
    from tests.tls_certs import make_pki

    pki = make_pki(tmp_path)
    config = DeploymentConfig.model_validate(
        {"server": {"port": 0, "tls": {"cert": str(pki.cert), "key": str(pki.client_key)}}}
    )
    with pytest.raises(StartupError, match=r"server\.tls: cannot use cert"):
        bind_grpc_server(config)
