"""`t2ictl recipes`: list the known recipes, or print one resolved with overrides."""

from __future__ import annotations

from typing import List, Optional

import typer

from t2ictl import recipes
from t2ictl.console import console, table

recipes_app = typer.Typer(help="List recipes, or show one resolved.", invoke_without_command=True,
                          no_args_is_help=False, rich_markup_mode=None)


@recipes_app.callback()
def list_recipes(ctx: typer.Context) -> None:
    """List the recipes found in $T2ICTL_RECIPES, ./recipes and the installed project's recipes/ folder."""
    if ctx.invoked_subcommand is not None:
        return
    rows = []
    for name, path in recipes.available_recipes().items():
        recipe = recipes.load_recipe(str(path))
        rows.append((name, recipe.data.dataset, recipe.description, str(path)))
    console.print(table("recipes", ["name", "dataset", "description", "file"], rows))


@recipes_app.command("show")
def show(
    name: str = typer.Argument(..., help="A recipe name (see `t2ictl recipes`) or a path to a .toml file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a value: section.key=value (repeatable)."),
) -> None:
    """Print the recipe NAME resolved: defaults filled in, overrides applied, validated."""
    recipe = recipes.load_recipe(name, set_ or [])
    console.print(recipes.recipe_to_toml(recipe), end="", markup=False, highlight=False)
