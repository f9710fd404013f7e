"""Every file under ``recipes/`` parses as the README says to use it (``polydiff fit -c recipes/base.yaml
-c recipes/<overlay>.yaml``), through the real CLI, and changes what it sets and nothing else; README's
"## Recipes" table lists exactly these files and states base.yaml's numbers as they are.

Parsing only: ``--print_config`` prints the resolved config and exits before anything is built.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from polydiff.cli import main

ROOT = Path(__file__).parents[1]
RECIPES = ROOT / "recipes"
BASE = RECIPES / "base.yaml"
README = ROOT / "README.md"
ALL_RECIPES = sorted(path for pattern in ("*.yaml", "*.yml") for path in RECIPES.rglob(pattern))
OVERLAYS = [path for path in ALL_RECIPES if path != BASE]

# Overlays that restate a default of base.yaml, to undo another recipe layered before them (later files
# win): on base.yaml alone they change nothing, so each is tested on top of the recipe it undoes.
UNDOES = {
    "data/smiles.yaml": "data/selfies.yaml",
    "precision/32-true.yaml": "precision/bf16-mixed.yaml",
    "schedule/cosine.yaml": "schedule/linear.yaml",
}


def name(path: Path) -> str:
    return path.relative_to(RECIPES).as_posix()


@functools.cache
def _printed(*files: str) -> str:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            main(["fit", *(arg for file in files for arg in ("-c", file)), "--print_config"])
    except SystemExit as exit_info:
        assert exit_info.code in (0, None), f"polydiff fit -c {' -c '.join(files)} --print_config failed (see stderr)"
    else:
        pytest.fail("--print_config should exit after printing the config")
    return out.getvalue()


def resolve(*paths: Path) -> dict[str, Any]:
    """The config ``polydiff fit -c <path> -c <path> ...`` resolves to, as ``--print_config`` prints it."""
    return yaml.safe_load(_printed(*(str(path) for path in paths)))


@functools.cache
def qualified(class_path: str) -> str:
    """One spelling per class: jsonargparse may print a default's class_path by a shorter import path
    (``polydiff.CosineSchedule``) than a recipe gives (``polydiff.diffusion.CosineSchedule``)."""
    module, _, attribute = class_path.rpartition(".")
    target = getattr(importlib.import_module(module), attribute)
    return f"{target.__module__}.{target.__qualname__}"


def canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: qualified(item) if key == "class_path" else canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, with class paths in one spelling; lists are leaves."""
    flat = {}
    for key, value in canonical(config).items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def contained(expected: Any, actual: Any) -> bool:
    """Whether ``actual`` (resolved) holds ``expected`` (as a recipe writes it): the resolved config adds
    every default, e.g. the init_args a recipe leaves out."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and contained(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(contained(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return expected == actual


def assert_sets_its_values(recipe: Path, resolved: dict[str, Any]) -> None:
    """Every key the recipe sets ends up with the recipe's value (``key+`` appends to a list)."""
    flat = flatten(resolved)
    for key, value in flatten(yaml.safe_load(recipe.read_text())).items():
        if key.endswith("+"):
            items = value if isinstance(value, list) else [value]
            assert key[:-1] in flat, f"{name(recipe)}: {key[:-1]} is not in the resolved config"
            for item in items:
                assert any(contained(item, got) for got in flat[key[:-1]]), f"{name(recipe)}: {key} {item}"
        else:
            assert key in flat, f"{name(recipe)}: {key} is not in the resolved config"
            assert contained(value, flat[key]), f"{name(recipe)}: {key} is {flat[key]!r}, the recipe says {value!r}"


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    flat_before, flat_after = flatten(before), flatten(after)
    return {k for k in flat_before.keys() | flat_after.keys() if flat_before.get(k, ...) != flat_after.get(k, ...)}


def related(key: str, recipe_key: str) -> bool:
    """Whether ``key`` is ``recipe_key``, lies under it or holds it (a scalar replaced by a class)."""
    return key == recipe_key or key.startswith(f"{recipe_key}.") or recipe_key.startswith(f"{key}.")


def test_base_recipe_parses_alone():
    config = resolve(BASE)
    assert_sets_its_values(BASE, config)
    assert config["model"]["diffusion_config"]["block_size"] >= 2  # the default diffuses: blocks masked by the schedule


@pytest.mark.parametrize("overlay", OVERLAYS, ids=name)
def test_recipe_layered_on_base_changes_what_it_sets(overlay):
    """``-c recipes/base.yaml -c <overlay>``: the overlay's values win, at least one resolved value
    differs from base.yaml alone, and every value that differs is one the overlay sets."""
    base = resolve(BASE)
    layered = resolve(BASE, overlay)
    assert_sets_its_values(overlay, layered)
    undone = UNDOES.get(name(overlay))
    if undone is not None:
        assert not changed_keys(base, layered), f"{name(overlay)} now changes base.yaml: drop it from UNDOES"
        base = resolve(BASE, RECIPES / undone)
        layered = resolve(BASE, RECIPES / undone, overlay)
        assert_sets_its_values(overlay, layered)
    changed = changed_keys(base, layered)
    assert changed, f"{name(overlay)} changes nothing on base.yaml (if it restates a default, list it in UNDOES)"
    # A key the overlay sets, or under a class it picks (the init_args that class adds with their defaults).
    recipe_keys = [
        key.removesuffix("+").removesuffix(".class_path") for key in flatten(yaml.safe_load(overlay.read_text()))
    ]
    unexpected = {key for key in changed if not any(related(key, recipe_key) for recipe_key in recipe_keys)}
    assert not unexpected, f"{name(overlay)} changes keys it does not set: {sorted(unexpected)}"


def recipe_table() -> list[tuple[str, str]]:
    """(file, description) of each row of README's "## Recipes" table."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Recipes\n" in text, "README.md has no '## Recipes' section"
    section = text.split("\n## Recipes\n", 1)[1].split("\n## ", 1)[0]
    rows = [re.match(r"\| `([^`]+)` \| (.*) \|$", line) for line in section.splitlines() if line.startswith("| `")]
    assert rows and all(rows), "every row of the recipe table should be | `recipes/<file>` | <what it sets> |"
    return [(row[1], row[2]) for row in rows]


def test_readme_recipe_table_lists_every_recipe_once():
    listed = Counter(file for file, _ in recipe_table())
    on_disk = {path.relative_to(ROOT).as_posix() for path in ALL_RECIPES}
    problems = {
        "listed more than once": sorted(file for file, count in listed.items() if count > 1),
        "missing from the table": sorted(on_disk - set(listed)),
        "listed but not in recipes/": sorted(set(listed) - on_disk),
    }
    assert not any(problems.values()), f"README's recipe table: {problems}"


def stated(description: str, pattern: str) -> tuple[str, ...]:
    found = re.findall(pattern, description)
    assert len(found) == 1, f"README's recipe table should state {pattern!r} once in: {description}"
    return found[0] if isinstance(found[0], tuple) else (found[0],)


def test_readme_states_base_numbers():
    description = dict(recipe_table())["recipes/base.yaml"]
    config = resolve(BASE)
    model, trainer = config["model"], config["trainer"]
    (lr,) = stated(description, r"AdamW (\d+(?:\.\d+)?(?:e-?\d+)?)\b")
    assert float(lr) == pytest.approx(model["optimizer"]["init_args"]["lr"])
    depth, width = stated(description, r"\b(\d+)x(\d+) BERT")
    assert (int(depth), int(width)) == (model["model_config"]["num_layers"], model["model_config"]["hidden_size"])
    (block_size,) = stated(description, r"block_size (\d+)")
    assert int(block_size) == model["diffusion_config"]["block_size"]
    (batch_size,) = stated(description, r"batches of (\d+)")
    assert int(batch_size) == config["data"]["batch_size"]
    (warmup,) = stated(description, r"(\d+) warmup steps")
    assert int(warmup) == model["lr_schedule"]["warmup_steps"]
    (minutes,) = stated(description, r"decay to (\d+(?:\.\d+)?) minutes")
    days, hours, mins, seconds = (int(part) for part in str(trainer["max_time"]).split(":"))
    assert float(minutes) * 60 == ((days * 24 + hours) * 60 + mins) * 60 + seconds
    (steps,) = stated(description, r"\(or ([\d,]+) steps\)")
    assert int(steps.replace(",", "")) == trainer["max_steps"]


@pytest.mark.parametrize("recipe", sorted((RECIPES / "model").glob("*.yaml")), ids=name)
def test_readme_states_model_sizes(recipe):
    description = dict(recipe_table())[recipe.relative_to(ROOT).as_posix()]
    depth, width = stated(description, r"^(\d+)(?: layers)? x (\d+)\b")
    model_config = resolve(BASE, recipe)["model"]["model_config"]
    assert (int(depth), int(width)) == (model_config["num_layers"], model_config["hidden_size"])
