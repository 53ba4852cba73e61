"""The package as a newcomer installs it: declared dependencies, a wheel that carries the recipes, a quiet start."""

import ast
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "t2ictl"

# distribution name -> the top-level modules it installs, where they differ from the name
MODULES_OF = {"tensorflow-hub": {"tensorflow_hub"}, "tomli": {"tomli"}}


def imported_modules(folder: Path) -> dict[str, str]:
    """Top-level module -> the first file that imports it, for every absolute import under `folder`."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(folder)))
    return found


def declared_modules() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    modules = set()
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0).lower()
        modules |= MODULES_OF.get(name, {name.replace("-", "_")})
    return modules


def test_every_third_party_import_is_a_declared_dependency():
    third_party = {module: where for module, where in imported_modules(PACKAGE).items()
                   if module not in sys.stdlib_module_names and module != "t2ictl"}
    undeclared = {module: where for module, where in third_party.items() if module not in declared_modules()}
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"
    assert {"tensorflow", "keras", "typer", "rich"} <= set(third_party)  # the scan sees the imports at all


def test_the_import_scan_finds_an_undeclared_module(tmp_path):
    (tmp_path / "mod.py").write_text("import click\nfrom os import path\nfrom . import sibling\n")
    assert imported_modules(tmp_path) == {"click": "mod.py", "os": "mod.py"}
    assert "click" not in declared_modules()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("t2ictl-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_every_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert modules - names == set(), "modules missing from the wheel"
    recipes = {f"t2ictl/builtin_recipes/{p.name}" for p in (ROOT / "recipes").glob("*.toml")}
    assert len(recipes) >= 10 and recipes - names == set(), "recipes missing from the wheel"


@pytest.mark.slow
def test_an_installed_wheel_finds_its_recipes_from_any_folder(wheel, tmp_path):
    """The wheel unpacked as a plain site-packages folder (no checkout on the path), run from an empty folder."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("T2ICTL_RECIPES", None)
    work = tmp_path / "elsewhere"
    work.mkdir()
    listed = subprocess.run([sys.executable, "-m", "t2ictl", "recipes"], capture_output=True, text=True, cwd=work,
                            env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    for name in ("shapes", "cub", "coco-galip"):
        assert re.search(rf"^\S*\s*{re.escape(name)}\s", listed.stdout, re.M), listed.stdout
    shown = subprocess.run([sys.executable, "-c", "import t2ictl.recipes as r; p = r.resolve_recipe_path('shapes'); "
                            "print(p); print(r.load_recipe('shapes', []).model.backbone)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    path, backbone = shown.stdout.split()
    assert Path(path).is_relative_to(site) and backbone == "dfgan"


def test_console_script_and_module_agree_on_the_version():
    from importlib.metadata import version

    from t2ictl import __version__

    script = Path(sys.executable).parent / "t2ictl"
    assert script.exists(), "the console script is not installed beside this Python"
    for command in ([sys.executable, "-m", "t2ictl", "--version"], [str(script), "--version"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout == f"t2ictl {__version__}\n" and result.stderr == ""
    assert version("t2ictl") == __version__


def test_commands_print_no_tensorflow_start_up_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "T2ICTL_VERBOSE")}
    result = subprocess.run([sys.executable, "-m", "t2ictl", "prepare", "shapes", "--count", "16", "--image-size", "16",
                             "--out", str(tmp_path / "data")], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "classes: 20" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("prepare shapes") for line in lines), result.stderr  # its progress bar


@pytest.mark.parametrize("args, code", [
    (["prepare", "nope"], 2), (["recipes", "show", "nope"], 2), (["sample", "a red bird", "--out", "a.jpg"], 2),
    (["recipes", "show", "cub-galip"], 0), (["train", "--recipe", "shapes", "--set", "data.bogus=1"], 2),
    (["experiment", "--recipe", "shapes", "--out", "x", "--vary", "train.bogus=1,2"], 2)])
def test_a_command_that_needs_no_tensorflow_does_not_start_it(args, code, tmp_path):
    """TensorFlow starts at its first import (several seconds): recipes load and a mistyped command fails at once."""
    script = f"import sys\nfrom t2ictl.cli import main\ntry:\n    main({args!r})\nfinally:\n" \
             "    print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == code, result.stderr
    assert code == 0 or result.stderr.startswith("error: "), result.stderr
    assert result.stdout.split()[-1] == "False"
