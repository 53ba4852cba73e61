"""Recipe files: finding them by name, reading TOML into the schema's dataclasses with `--set section.key=value`
overrides, and writing a resolved recipe back. A key the dataclass does not have, or a value of the wrong type, is an
error that names the key and the file."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import types
import typing
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from t2ictl.errors import UserError
from t2ictl.models import backbones
from t2ictl.models.backbones.base import BackboneConfig
from t2ictl.recipes.schema import DEFAULT_BACKBONE, Recipe


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up, first match wins."""
    dirs = []
    if os.environ.get("T2ICTL_RECIPES"):
        dirs.append(Path(os.environ["T2ICTL_RECIPES"]))
    dirs.append(Path.cwd() / "recipes")
    dirs.extend(shipped_recipe_dirs())
    unique = []
    for path in dirs:
        if path.is_dir() and path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def shipped_recipe_dirs() -> list[Path]:
    """The recipes installed with the package (the checkout's recipes/ folder in an editable install)."""
    spec = importlib.util.find_spec("t2ictl.builtin_recipes")
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def resolve_recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"recipe file {candidate} does not exist")
        return candidate
    known = available_recipes()
    if name_or_path not in known:
        names = ", ".join(sorted(known)) or "none found"
        raise UserError(f"unknown recipe {name_or_path!r} (known: {names}); pass a name or a path to a .toml file")
    return known[name_or_path]


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    file_model = dict(raw.get("model", {})) if isinstance(raw.get("model"), dict) else {}
    for override in overrides or []:
        _apply_override(raw, override)
    _drop_other_backbone_keys(raw, file_model, overrides or [])
    return recipe_from_dict(raw, source=str(path))


def _drop_other_backbone_keys(raw: dict, file_model: dict, overrides: list[str]) -> None:
    """`--set model.backbone=X` on a recipe written for another backbone: the file's [model] keys that X does not
    have (e.g. DF-GAN's d_gate_init under GALIP) belong to the file's backbone and are left out. Keys given with
    --set are kept, so a wrong one is still an error."""
    model = raw.get("model")
    chosen = model.get("backbone", DEFAULT_BACKBONE) if isinstance(model, dict) else None
    if chosen is None or chosen == file_model.get("backbone", DEFAULT_BACKBONE):
        return
    if chosen not in backbones.BACKBONES:
        return  # the build names the unknown backbone
    known = {field.name for field in dataclasses.fields(backbones.config_class(chosen))}
    overridden = {o.partition("=")[0].strip() for o in overrides}
    for key in file_model:
        if key not in known and f"model.{key}" not in overridden:
            del model[key]


def recipe_from_dict(raw: dict, source: str = "<recipe>") -> Recipe:
    try:
        recipe = _build(Recipe, raw, prefix="")
        recipe.validate()
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def recipe_to_toml(recipe: Recipe) -> str:
    """Serialise a resolved recipe; the result loads back to an equal recipe."""
    data = recipe_to_dict(recipe)
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{sub} = {_toml_value(item)}" for sub, item in value.items())
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set expects section.key=value, got {override!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word is a string: --set data.dataset=cub
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.')}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**values)


def _coerce(hint, value, key: str):
    if hint is BackboneConfig:  # the backbone named in the table decides which keys it has
        name = value.get("backbone", DEFAULT_BACKBONE) if isinstance(value, dict) else None
        hint = backbones.config_class(name) if name in backbones.BACKBONES else BackboneConfig
        if name not in backbones.BACKBONES:
            raise ValueError(f"{key}.backbone: {name!r} is not one of {', '.join(backbones.BACKBONES)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: {value!r} does not fit {hint}")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{key}: expected nothing, got {value!r}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value
