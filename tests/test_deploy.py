"""Docker cannot run here: parse every compose file and check its settings against the code."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from audiosim.shared.settings import Settings
from tests.conftest import REPO

COMPOSE_FILES = [REPO / "docker-compose.yml", *sorted((REPO / "deploy").glob("*compose*.yml"))]
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])


def services(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc.get("services"), dict) and doc["services"], f"{path.name} has no services"
    return doc["services"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_audiosim_variables_exist_in_settings(path):
    fields = {f"AUDIOSIM_{name.upper()}" for name in Settings.model_fields}
    for name, svc in services(path).items():
        env = svc.get("environment") or {}
        keys = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for key in keys:
            if key.startswith("AUDIOSIM_"):
                assert key in fields, f"{path.name}: service {name} sets {key}, which Settings does not have"
                value = env[key] if isinstance(env, dict) else None
                if value is not None and "${" not in str(value):
                    Settings(**{key.removeprefix("AUDIOSIM_").lower(): value})  # validates the value


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_services_are_wired_sensibly(path):
    svcs = services(path)
    for name, svc in svcs.items():
        if "image" in svc and "qdrant" in svc["image"]:
            assert "healthcheck" in svc, f"{name} has no health check"
            assert any("/qdrant/storage" in v for v in svc.get("volumes", [])), f"{name} keeps no data"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in svcs
            assert cond.get("condition") == "service_healthy"
        if "build" in svc:
            dockerfile = path.parent / svc["build"].get("context", ".") / svc["build"]["dockerfile"]
            assert dockerfile.is_file()
            text = dockerfile.read_text()
            assert text.index("pip install .") < text.index("COPY shared"), "install dependencies before code"
            steps = [line for line in text.splitlines() if not line.startswith("#")]
            assert not [x for x in steps if "torch" in x and "import torch" not in x], "the image needs no torch"
        cmd = svc.get("entrypoint") or svc.get("command")
        if cmd and "build" in svc:
            assert cmd[0] in SCRIPTS, f"{name} runs {cmd[0]}, which is not a console script"


def test_the_wheel_installs_one_namespace_and_no_torch(tmp_path):
    """`pip install audiosim` puts only `audiosim` into site-packages (no generic `shared`), ships the ONNX
    model but not the training checkpoint, and asks for torch only with the `train` extra."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("audiosim-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "audiosim",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    assert "audiosim/shared/models/default.onnx" in names
    assert not [n for n in names if n.endswith(".pt")]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if "torch" in r]
    assert [r for r in requires if "torch" in r and 'extra == "train"' in r]
