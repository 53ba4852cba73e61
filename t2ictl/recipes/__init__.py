"""Recipes: the schema of what a run needs (schema.py) and the TOML files that fill it (loading.py)."""

from t2ictl.recipes.loading import (available_recipes, load_recipe, recipe_dirs, recipe_from_dict, recipe_to_dict,
                                    recipe_to_toml, resolve_recipe_path, shipped_recipe_dirs)
from t2ictl.recipes.schema import (DEFAULT_BACKBONE, MULTI_LABEL_RULES, PRECISIONS, STRATEGIES, ContrastiveConfig,
                                   DataConfig, PretrainConfig, Recipe, RuntimeConfig, TrainConfig)

__all__ = ["DEFAULT_BACKBONE", "MULTI_LABEL_RULES", "PRECISIONS", "STRATEGIES", "ContrastiveConfig", "DataConfig",
           "PretrainConfig", "Recipe", "RuntimeConfig", "TrainConfig", "available_recipes", "load_recipe",
           "recipe_dirs", "recipe_from_dict", "recipe_to_dict", "recipe_to_toml", "resolve_recipe_path",
           "shipped_recipe_dirs"]
