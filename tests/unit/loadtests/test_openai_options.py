"""`inflection load --target openai`: its options, their checks, and how they reach the
locustfile (the same flags on every Locust process's command line)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import cli, options
from loadtests.locust_run import locust_command

REPO = Path(__file__).resolve().parents[3]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inflection")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["load", *argv])


def test_defaults_are_the_grpc_target() -> None:
    args = parse()
    assert (args.target, args.api, args.model, args.priority) == ("grpc", "completions", "", False)
    assert options.openai_flags(args) == []
    assert "--target" not in locust_command(args, "h:1", None)
    assert options.config_of(args, "h:1")["target"] == "grpc"


def test_openai_options_become_locust_flags_for_every_process(tmp_path: Path) -> None:
    argv = (
        *("--target", "openai", "--host", "http://h:8000", "--model", "m", "--api", "chat"),
        *("--tokenizer", str(tmp_path), "--affinity-header", "x-a", "--priority"),
    )
    args = parse(*argv)
    options.validate(args)
    flags = [
        *("--target", "openai", "--model", "m", "--api", "chat", "--tokenizer", str(tmp_path)),
        *("--affinity-header", "x-a", "--priority"),
    ]
    assert options.openai_flags(args) == flags
    command = locust_command(args, "http://h:8000", None)
    assert command[command.index("--target") :][: len(flags)] == flags
    worker = parse(*argv, "--worker")
    assert options.openai_flags(worker) == flags
    assert set(flags) <= set(locust_command(worker, None, None))
    config = options.config_of(args, "http://h:8000")
    assert (config["target"], config["model"], config["api"]) == ("openai", "m", "chat")


def test_relative_tokenizer_directory_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tok").mkdir()
    monkeypatch.chdir(tmp_path)
    args = parse("--target", "openai", "--host", "http://h:1", "--tokenizer", "tok")
    options.resolve_paths(args)
    assert args.tokenizer == str(tmp_path / "tok")
    named = parse("--target", "openai", "--host", "http://h:1", "--tokenizer", "org/name")
    options.resolve_paths(named)
    assert named.tokenizer == "org/name"  # not a directory here: left as given


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--target", "openai"), "--target openai needs --host"),
        (("--model", "m"), "go with --target openai"),
        (("--priority",), "go with --target openai"),
        (("--target", "openai", "--host", "http://a:1,ftp://b:2"), "expected http://HOST:PORT"),
        (("--target", "openai", "--host", "http://a:1, http://a:1/v1"), "listed twice"),
        (("--target", "openai", "--host", "http://a:1", "--tls"), "http://a:1 is not https://"),
    ],
)
def test_bad_combinations(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(options.LoadError, match=message):
        options.validate(parse(*argv))


def test_several_hosts_are_the_servers_in_turn() -> None:
    hosts = options.parse_hosts("http://a:8000, b:8001/v1,")
    assert [e.url for e in hosts] == ["http://a:8000", "http://b:8001"]
    options.validate(parse("--target", "openai", "--host", "http://a:8000,http://b:8001"))


def test_the_locustfile_takes_the_flags() -> None:
    code = (
        "import locust, sys\n"
        "from locust.argument_parser import parse_options\n"
        "import loadtests.locustfile\n"
        "o = parse_options(['-f', 'loadtests/locustfile.py', '--target', 'openai', '--model',\n"
        "    'm', '--api', 'chat', '--priority', '--affinity-header', 'none'])\n"
        "print(o.target, o.model, o.api, o.priority, o.affinity_header)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert out.stdout.splitlines()[-1].split() == ["openai", "m", "chat", "True", "none"]
