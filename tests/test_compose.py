"""docker-compose.yml and the Dockerfile stay in step with the code: settings, commands, search attributes.

No Docker here: these tests read the files and check them against what the code reads and accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from temporalio.common import SearchAttributeIndexedValueType

import cli
from api.routes import codec
from core.config import Settings
from core.temporal import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}.
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[-?])(?P<arg>[^}]*))?\}")


def _resolved(value: str) -> str:
    """What compose would pass on: the default where there is one, a stand-in for required secrets."""
    return INTERPOLATION.sub(lambda m: m["arg"] if m["op"] == "-" else f"secret-{m['name'].lower()}", value)


def _environment(service: str) -> dict[str, str]:
    return {key: _resolved(str(value)) for key, value in SERVICES[service]["environment"].items()}


def _chronos_args(argv: list[str], monkeypatch: pytest.MonkeyPatch | None = None) -> argparse.Namespace:
    """Parse argv with the real `chronos` command line (Click, under Typer) and stop before the command
    runs: the command's name and its options."""
    group = typer.main.get_command(cli.app)
    assert isinstance(group, typer.core.TyperGroup)
    context = group.make_context("chronos", list(argv))
    name, command, rest = group.resolve_command(context, [*context._protected_args, *context.args])
    assert command is not None, argv
    params = command.make_context(str(name), rest, parent=context).params
    return argparse.Namespace(command=name, **params)


def test_every_chronos_variable_is_a_setting() -> None:
    named = set(re.findall(r"\bCHRONOS_[A-Z0-9_]+", COMPOSE_TEXT))
    unknown = {name for name in named if name.removeprefix("CHRONOS_").lower() not in Settings.model_fields}
    assert named
    assert unknown == set(), f"not read by core.config.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("service", ["api", "worker"])
def test_chronos_environment_is_valid_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read the service's environment as its process would, and find every server it names in the file."""
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.sqlalchemy_url.startswith("postgresql+psycopg://")
    assert settings.jwt_secret, "a fixed secret, or every replica signs tokens the others reject"
    for url in (settings.sqlalchemy_url, settings.smtp_url, f"//{settings.temporal_address}"):
        assert urlsplit(url).hostname in SERVICES, f"{url} names no service of the compose file"


def test_required_services_exist() -> None:
    required = {
        "postgresql",
        "temporal",
        "temporal-search-attributes",
        "temporal-ui",
        "api",
        "worker",
        "mailpit",
    }
    assert required <= SERVICES.keys()


def test_api_command_is_a_chronos_command_on_the_published_port(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _chronos_args(SERVICES["api"]["command"], monkeypatch)
    assert (args.command, args.host) == ("api", "0.0.0.0")
    assert f"{args.port}:{args.port}" in SERVICES["api"]["ports"]
    assert f"http://127.0.0.1:{args.port}/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])


def test_worker_command_is_a_chronos_command(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _chronos_args(SERVICES["worker"]["command"], monkeypatch)
    assert args.command == "worker"
    assert args.concurrency > 0


def test_one_key_setting_everywhere_and_the_ui_decodes_through_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API and every worker must hold the same keys, so none may generate its own; the UI's codec
    endpoint is the API's on its published port, and the API admits the UI's origin there (CORS). The
    UI calls it with credentials, from the same host, so the dashboard's SameSite=Strict cookie goes
    along (tests/test_codec_browser.py shows that in a browser)."""
    for service in ("api", "worker"):
        assert str(SERVICES[service]["environment"]["CHRONOS_ENCRYPTION_KEYS"]).startswith(
            "${CHRONOS_ENCRYPTION_KEYS:?"
        ), f"{service} must be given the keys"
    args = _chronos_args(SERVICES["api"]["command"], monkeypatch)
    endpoint = urlsplit(_environment("temporal-ui")["TEMPORAL_CODEC_ENDPOINT"])
    assert (endpoint.port, endpoint.path) == (args.port, f"/api/v1{codec.PREFIX}")
    ui = urlsplit(_environment("api")["CHRONOS_TEMPORAL_UI_URL"])
    assert f"{ui.port}:8080" in SERVICES["temporal-ui"]["ports"]
    assert _environment("temporal-ui")["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"
    assert endpoint.hostname == ui.hostname


def test_worker_can_scale() -> None:
    """`--scale worker=N` fails on a fixed container name or host port."""
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_dependencies_wait_for_health_or_completion() -> None:
    waits = [
        (service, target, condition["condition"])
        for service, spec in SERVICES.items()
        for target, condition in (spec.get("depends_on") or {}).items()
    ]
    assert ("api", "temporal", "service_healthy") in waits
    for service, target, condition in waits:
        assert target in SERVICES, f"{service} waits for a missing service {target}"
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[target], (
                f"{service} waits for {target}, which has no health check"
            )
        else:
            assert condition == "service_completed_successfully", (
                f"{service} only waits for {target} to start"
            )
            restart = SERVICES[target].get("restart", "no")
            assert restart not in ("always", "unless-stopped"), f"{target} must be a one-shot"


def test_search_attributes_are_those_the_code_sets() -> None:
    setup = SERVICES["temporal-search-attributes"]
    argv = [*setup["entrypoint"], *setup.get("command", [])]
    names = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--name"]
    types = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--type"]
    assert dict(zip(names, types, strict=True)) == {
        key.name: SearchAttributeIndexedValueType(key.indexed_value_type).name.title()
        for key in SEARCH_ATTRIBUTES
    }


def test_one_namespace_everywhere() -> None:
    setup = SERVICES["temporal-search-attributes"]["entrypoint"]
    namespaces = {
        _environment("api")["CHRONOS_TEMPORAL_NAMESPACE"],
        _environment("worker")["CHRONOS_TEMPORAL_NAMESPACE"],
        _environment("temporal")["DEFAULT_NAMESPACE"],
        setup[setup.index("--namespace") + 1],
    }
    assert len(namespaces) == 1, namespaces


def test_image_runs_the_chronos_console_script(monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = dict(re.findall(r"^(ENTRYPOINT|CMD|USER) (.+)$", dockerfile, re.MULTILINE))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(instructions["ENTRYPOINT"]) == ["chronos"]
    assert "chronos" in scripts
    assert instructions["USER"] not in ("root", "0")
    assert _chronos_args(json.loads(instructions["CMD"]), monkeypatch).command == "api"


def test_operations_doc_lists_every_setting() -> None:
    table = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CHRONOS_{name.upper()}`" not in table]
    assert missing == [], f"add to the settings table of docs/operations.md: {missing}"
