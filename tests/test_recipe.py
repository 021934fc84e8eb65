import pytest

from nerfexport.shrink.recipe import RecipeError, builtin_recipes, load_recipe
from nerfexport.shrink.pipeline import ShrinkSpec


def test_shipped_recipes_load_and_are_valid():
    shipped = builtin_recipes()
    assert "coreset-w128" in shipped
    for name, path in shipped.items():
        r = load_recipe(name)
        assert r.description
        spec = ShrinkSpec(**r.shrink)
        spec.validate()
    assert load_recipe(str(shipped["coreset-w128"])).shrink["method"] == "coreset"


def test_bad_recipes(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[shrink]\nmethod = "coreset"\nwdith = 128\n')
    with pytest.raises(RecipeError, match="wdith"):
        load_recipe(p)
    p.write_text('[shrnk]\nwidth = 128\n')
    with pytest.raises(RecipeError, match="shrnk"):
        load_recipe(p)
    p.write_text('[shrink]\nwidth = "wide"\n')
    with pytest.raises(RecipeError, match="int"):
        load_recipe(p)
    p.write_text('[shrink\n')
    with pytest.raises(RecipeError, match="TOML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
