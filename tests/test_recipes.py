from pathlib import Path

import pytest

from t2ictl import recipes
from t2ictl.errors import UserError

RECIPE_NAMES = sorted(path.stem for path in (Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_shipped_recipes_load_and_round_trip(name, tmp_path):
    recipe = recipes.load_recipe(name)
    assert recipe.name == name
    written = tmp_path / "again.toml"
    written.write_text(recipes.recipe_to_toml(recipe))
    again = recipes.load_recipe(str(written))
    assert recipes.recipe_to_dict(again) == recipes.recipe_to_dict(recipe)


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_shipped_recipes_provide_every_size_their_backbone_trains_at(name):
    recipe = recipes.load_recipe(name)
    needed = set(recipe.model.image_sizes(recipe.data.image_size)) - {recipe.data.image_size}
    assert needed <= set(recipe.data.extra_sizes), (name, needed)


def test_overrides_are_typed_and_nested():
    recipe = recipes.load_recipe("shapes", ["data.batch_size=8", "contrastive.enabled=false",
                                            "data.dataset=shapes-multi", "data.extra_sizes=[16]"])
    assert recipe.data.batch_size == 8
    assert recipe.contrastive.enabled is False
    assert recipe.data.dataset == "shapes-multi"
    assert recipe.data.extra_sizes == [16]


def test_float_field_accepts_integer():
    recipe = recipes.load_recipe("shapes", ["contrastive.gan_weight=1"])
    assert recipe.contrastive.gan_weight == 1.0 and isinstance(recipe.contrastive.gan_weight, float)


def test_switching_backbone_leaves_out_the_file_backbone_s_own_keys():
    """The shapes recipe sets DF-GAN's d_gate_init and project_condition; under --set model.backbone=galip they are
    left out, keys both have (nf, g_lr) are kept, and a DF-GAN key given with --set is still an error."""
    dfgan = recipes.load_recipe("shapes")
    assert dfgan.model.d_gate_init == 1.0 and dfgan.model.project_condition is True
    galip = recipes.load_recipe("shapes", ["model.backbone=galip"])
    assert type(galip.model).__name__ == "GALIPConfig" and not hasattr(galip.model, "d_gate_init")
    assert (galip.model.nf, galip.model.g_lr) == (dfgan.model.nf, dfgan.model.g_lr)
    with pytest.raises(UserError, match="unknown key model.d_gate_init"):
        recipes.load_recipe("shapes", ["model.backbone=galip", "model.d_gate_init=1.0"])


@pytest.mark.parametrize("override, message", [
    ("data.bogus=1", "unknown key data.bogus"),
    ("data.batch_size=x", "data.batch_size: expected an integer"),
    ("data.batch_size=0", "data.batch_size: must be positive"),
    ("contrastive.enabled=3", "contrastive.enabled: expected true or false"),
    ("contrastive.multi_label_rule=some", "multi_label_rule: 'some' is not one of"),
    ("data.extra_sizes=[128]", "extra_sizes"),
    ("model.backbone=nope", "model.backbone: 'nope' is not one of"),
    ("bogus.key=1", "unknown key bogus"),
])
def test_bad_values_name_the_key_and_file(override, message):
    with pytest.raises(UserError) as info:
        recipes.load_recipe("shapes", [override])
    assert message in str(info.value)
    assert "shapes.toml" in str(info.value)


def test_bad_toml_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\n")
    with pytest.raises(UserError, match="not valid TOML"):
        recipes.load_recipe(str(bad))
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        recipes.load_recipe("nope")
    with pytest.raises(UserError, match="does not exist"):
        recipes.load_recipe(str(tmp_path / "missing.toml"))


def test_malformed_override():
    with pytest.raises(UserError, match="section.key=value"):
        recipes.load_recipe("shapes", ["novalue"])


def test_recipe_dirs_env(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text('[data]\ndataset = "cub"\n')
    monkeypatch.setenv("T2ICTL_RECIPES", str(tmp_path))
    assert recipes.available_recipes()["mine"] == tmp_path / "mine.toml"
    assert recipes.load_recipe("mine").data.dataset == "cub"
    assert recipes.load_recipe("mine").data.path == Path("data/cub")


def test_an_out_of_range_training_option_names_its_key():
    with pytest.raises(UserError, match="train.mode_seeking_weight: must be zero or positive, got -1"):
        recipes.load_recipe("shapes", ["train.mode_seeking_weight=-1"])
