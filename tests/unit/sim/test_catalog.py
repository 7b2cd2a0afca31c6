"""The GPU/model catalog: built-ins load, user YAML adds and overrides entries, and bad
names or files are reported with what is known and where the problem is."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.sim.catalog import CatalogError, load_catalog


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(CatalogError) as failed:
        load_catalog([path])
    return str(failed.value)


def test_builtin_catalog_has_the_documented_gpus_models_and_families() -> None:
    catalog = load_catalog()
    for gpu in ("a100", "h100", "h200", "b200", "gb200", "l40s", "mi300x"):
        assert catalog.gpu(gpu).source
    h100 = catalog.gpu("H100")  # names are case-insensitive
    assert (h100.memory_gib, h100.hbm_tbps, h100.bf16_tflops, h100.fp8_tflops) == (
        80,
        3.35,
        989,
        1979,
    )
    llama = catalog.model("llama-3.1-70b")
    assert (llama.layers, llama.hidden, llama.q_heads, llama.kv_heads) == (80, 8192, 64, 8)
    mixtral = catalog.model("mixtral-8x7b")
    assert mixtral.is_moe and (mixtral.experts, mixtral.experts_per_token) == (8, 2)
    assert catalog.family("vllm").c_step_ms > 0
    assert catalog.price("h100") == pytest.approx(2.32)


USER_CATALOG = """
gpus:
  h100:
    full_name: H100 with more memory
    memory_gib: 96
    hbm_tbps: 3.9
    bf16_tflops: 989
    fp8_tflops: 1979
    link_gbps: 450
    tdp_w: 700
    idle_w: 75
    source: my lab
  rtx-6000:
    full_name: RTX PRO 6000
    memory_gib: 96
    hbm_tbps: 1.8
    bf16_tflops: 500
    fp8_tflops: 1000
    link_gbps: 64
    tdp_w: 600
    idle_w: 40
    source: datasheet
models:
  tiny-7b:
    hf_id: me/tiny-7b
    layers: 28
    hidden: 3584
    q_heads: 28
    kv_heads: 4
    head_dim: 128
    ffn: 18944
    vocab: 152064
    params_total: 7.0e9
    source: config.json
prices:
  date: "2026"
  source: my contract
  usd_per_gpu_hour: {H100: 1.5}
"""


def test_user_yaml_adds_and_overrides_gpus_models_and_prices(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, USER_CATALOG)])
    assert catalog.gpu("h100").memory_gib == 96  # overridden
    assert catalog.gpu("h100").source == "my lab"
    assert catalog.gpu("rtx-6000").hbm_tbps == 1.8  # added
    assert catalog.model("tiny-7b").params_total == 7.0e9
    assert catalog.model("llama-3.1-8b").layers == 32  # built-ins remain
    assert catalog.gpu("b200").memory_gib == 180
    assert catalog.price("h100") == 1.5
    assert catalog.price("b200") == pytest.approx(4.875)  # other prices remain


def test_later_files_win(tmp_path: Path) -> None:
    first = write(tmp_path, USER_CATALOG, "first.yaml")
    second = write(
        tmp_path,
        "prices: {date: '2027', source: later, usd_per_gpu_hour: {h100: 1.0}}",
        "second.yaml",
    )
    assert load_catalog([first, second]).price("h100") == 1.0


@pytest.mark.parametrize(
    ("kind", "name", "known"),
    [("GPU", "h300", "h100"), ("model", "llama-9", "llama-3.1-8b"), ("engine family", "x", "vllm")],
)
def test_unknown_names_list_the_known_ones(kind: str, name: str, known: str) -> None:
    catalog = load_catalog()
    lookup = {"GPU": catalog.gpu, "model": catalog.model, "engine family": catalog.family}[kind]
    with pytest.raises(CatalogError) as failed:
        lookup(name)
    message = str(failed.value)
    assert f"unknown {kind} {name!r}" in message
    assert known in message


def test_unknown_gpu_added_by_user_is_listed(tmp_path: Path) -> None:
    catalog = load_catalog([write(tmp_path, USER_CATALOG)])
    with pytest.raises(CatalogError, match="rtx-6000"):
        catalog.gpu("nope")


def test_malformed_entry_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        USER_CATALOG.replace(
            "memory_gib: 96\n    hbm_tbps: 1.8", "memory_gib: lots\n    hbm_tbps: 1.8"
        ),
    )
    message = load_error(path)
    assert str(path) in message
    assert "memory_gib" in message


def test_missing_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m:\n    hf_id: x\n    layers: 2\n")
    message = load_error(path)
    assert str(path) in message
    assert "hidden" in message and "Field required" in message


def test_misspelt_field_is_rejected(tmp_path: Path) -> None:
    text = USER_CATALOG.replace("tdp_w: 600", "tdp_watts: 600")
    message = load_error(write(tmp_path, text))
    assert "tdp_watts" in message


def test_unknown_section_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "gpu:\n  h100: {}\n")
    message = load_error(path)
    assert str(path) in message and "'gpu'" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("gpus: [h100, h200\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
        ("gpus:\n  - h100\n", "each section must map names to entries"),
    ],
)
def test_malformed_yaml_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert str(path) in message and problem in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    message = load_error(tmp_path / "absent.yaml")
    assert "absent.yaml" in message and "cannot read" in message
