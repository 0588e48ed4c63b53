"""Recipes with image data by path: the new data fields keep earlier fingerprints, paths resolve."""
from torchslim.recipe.schema import parse_recipe

BASE = "name: r\nmodel: {name: digits_cnn}\nstages:\n  - method: evaluate\n"


def test_new_data_fields_at_their_defaults_keep_the_fingerprint():
    plain = parse_recipe(BASE + "data: {name: digits}\n")
    explicit = parse_recipe(BASE + "data: {name: digits, workers: 0, cache: false, skip_bad_images: false}\n")
    assert plain.fingerprint(0) == explicit.fingerprint(0)
    cached = parse_recipe(BASE + "data: {name: digits, cache: true}\n")
    assert cached.fingerprint(0) != plain.fingerprint(0)


def test_data_path_and_code_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "net.py").write_text("def build():\n    pass\n")
    text = "name: r\nmodel: {name: 'net.py:build'}\ndata: {path: photos}\nstages:\n  - method: evaluate\n"
    r = parse_recipe(text, "r.yaml", base_dir=tmp_path)
    assert r.data.path == str(tmp_path / "photos") and r.model.name == f"{tmp_path / 'net.py'}:build"
