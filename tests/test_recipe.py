"""The recipe: examples validate, key=value overrides, error messages that list every problem, the fingerprint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from tunewise.errors import RecipeError
from tunewise.recipe import DataFile, Recipe, load_recipe, parse_override, recipe_reference, validate_recipe

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("**/*.yaml")) + sorted((REPO / "examples").glob("**/*.yml"))


def write(path: Path, recipe: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def minimal(tmp_path) -> Path:
    """A valid recipe in tmp_path/recipes/, with its train path relative to the recipe file."""
    return write(tmp_path / "recipes" / "r.yaml", {"name": "mini", "data": {"train": "d/train.jsonl"}})


def problems(exc: pytest.ExceptionInfo) -> list[str]:
    return [line.strip()[2:] for line in str(exc.value).splitlines() if line.strip().startswith("- ")]


# ---------------------------------------------------------------- examples


def test_there_are_examples():
    assert EXAMPLES, "examples/ should hold at least one recipe"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_recipe_parses_and_validates(path):
    # a recipe whose data a script builds says so on its first line (`# python examples/data/X.py && tunewise run ...`)
    prep = re.match(r"# python (examples/data/\S+\.py) &&", path.read_text(encoding="utf-8").splitlines()[0])
    if prep:
        subprocess.run([sys.executable, str(REPO / prep.group(1))], cwd=REPO, check=True, capture_output=True)
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    for split in ("train", "validation", "test"):
        f = getattr(recipe.data, split)
        if f is not None and not f.path.startswith("hf:"):
            assert Path(f.path).is_absolute()
            assert Path(f.path).is_file(), f"{path.name}: data.{split} points at a missing file {f.path}"
    # the resolved recipe round-trips through its own YAML
    again = validate_recipe(yaml.safe_load(recipe.to_yaml()))
    assert again.fingerprint() == recipe.fingerprint()


# ---------------------------------------------------------------- overrides


def test_scalar_override_is_parsed_as_yaml(minimal):
    recipe = load_recipe(minimal, ["train.epochs=3", "train.lr=2e-5", "train.group_by_length=false", "seed=7"])
    assert recipe.train.epochs == 3
    assert recipe.train.lr == pytest.approx(2e-5)
    assert recipe.train.group_by_length is False
    assert recipe.seed == 7


def test_paths_in_the_file_are_relative_to_the_file(minimal, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(minimal)
    assert recipe.data.train.path == str((minimal.parent / "d" / "train.jsonl").resolve())


def test_path_override_is_relative_to_the_cwd(minimal, tmp_path, monkeypatch):
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    recipe = load_recipe(minimal, ["data.train=my/train.csv", "data.test.path=my/test.csv"])
    assert recipe.data.train.path == str((work / "my" / "train.csv").resolve())
    assert recipe.data.test.path == str((work / "my" / "test.csv").resolve())


def test_subkey_override_on_the_string_shorthand(minimal, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(minimal, ["data.train.license=MIT", "data.train.contains_personal_data=true"])
    assert recipe.data.train == DataFile(path=str((minimal.parent / "d" / "train.jsonl").resolve()),
                                         license="MIT", contains_personal_data=True)


def test_tilde_deletes_a_key(tmp_path):
    path = write(tmp_path / "r.yaml", {"name": "mini", "data": {"train": "t.jsonl", "test": "x.jsonl"},
                                       "train": {"epochs": 2, "lr": 0.5}})
    recipe = load_recipe(path, ["~data.test", "~train.epochs"])
    assert recipe.data.test is None
    assert recipe.train.epochs == Recipe.model_fields["train"].default_factory().epochs  # back to the default
    assert recipe.train.lr == 0.5  # siblings untouched


def test_deleting_a_required_key_is_reported_as_coming_from_the_override(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["~data"])
    assert "`data` is required (from override `~data`)" in str(exc.value)


def test_list_values_use_yaml_flow_syntax(minimal):
    recipe = load_recipe(minimal, ["data.labels=[neg, pos]", "evaluate.baselines=[majority]",
                                   "card.language=[en,de]", "data.slice_fields=[channel,tier]"])
    assert recipe.data.labels == ["neg", "pos"]
    assert recipe.evaluate.baselines == ["majority"]
    assert recipe.card.language == ["en", "de"]
    assert recipe.data.slice_fields == ["channel", "tier"]


def test_integer_labels_become_strings(minimal):
    assert load_recipe(minimal, ["data.labels=[0, 1, 2]"]).data.labels == ["0", "1", "2"]


def test_later_override_wins(minimal):
    assert load_recipe(minimal, ["train.epochs=3", "train.epochs=5"]).train.epochs == 5


def test_overrides_do_not_touch_the_file(minimal):
    before = minimal.read_bytes()
    load_recipe(minimal, ["train.epochs=3"])
    assert minimal.read_bytes() == before


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train..epochs=3", ".epochs=3", "train.=3", "epochs:3"])
def test_malformed_override_syntax_is_a_recipe_error(minimal, item):
    with pytest.raises(RecipeError, match=re.escape(f"override `{item}`")):
        load_recipe(minimal, [item])


def test_parse_override():
    assert parse_override("train.epochs=3") == ("train.epochs", 3, False)
    assert parse_override("card.model_name=a=b") == ("card.model_name", "a=b", False)
    assert parse_override("data.labels=[a, b]") == ("data.labels", ["a", "b"], False)
    assert parse_override("card.authors=") == ("card.authors", "", False)
    assert parse_override("~data.test") == ("data.test", None, True)


def test_override_through_a_scalar_is_an_error(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["seed.value.x=1"])
    assert "seed" in str(exc.value)


def test_malformed_delete_override_is_a_recipe_error(minimal):
    with pytest.raises(RecipeError):
        load_recipe(minimal, ["~"])


# ---------------------------------------------------------------- error messages


BAD = {
    "name": "bad name!",                      # pattern
    "data": {"train": "t.jsonl", "labels": ["only"], "validation_fraction": 0.7},
    "model": {"max_length": 3},
    "train": {"epoch": 3, "lr": "fast", "batch_size": 0},
    "evaluate": {"baselines": ["majority", "bert"]},
    "trian": {},
}


def test_a_bad_recipe_reports_every_problem_at_once(tmp_path):
    path = write(tmp_path / "bad.yaml", BAD)
    with pytest.raises(RecipeError) as exc:
        load_recipe(path, ["evaluate.confidence=2", "train.precision=fp8"])
    text = str(exc.value)
    found = problems(exc)
    assert text.startswith(f"{path}: the recipe has {len(found)} problem(s):")
    assert len(found) == 11, text

    def line(key: str) -> str:
        hits = [p for p in found if p.startswith(f"`{key}`")]
        assert len(hits) == 1, f"expected one problem about {key} in:\n{text}"
        return hits[0]

    # field name, the bad value, and where it came from
    assert "'bad name!'" in line("name") and f"(from {path})" in line("name")
    assert "at least 2 labels" in line("data.labels") and "['only']" in line("data.labels")
    assert "0.5" in line("data.validation_fraction") and "got 0.7" in line("data.validation_fraction")
    assert "greater than or equal to 8" in line("model.max_length") and "got 3" in line("model.max_length")
    assert "'fast'" in line("train.lr")
    assert "got 0" in line("train.batch_size")
    assert "'bert'" in line("evaluate.baselines.1") and "'tfidf_logreg'" in line("evaluate.baselines.1")
    assert "got 2" in line("evaluate.confidence") and "(from override `evaluate.confidence=2`)" in line("evaluate.confidence")
    assert "'fp8'" in line("train.precision") and "(from override `train.precision=fp8`)" in line("train.precision")
    # unknown keys get a suggestion
    assert "not a recipe field" in line("train.epoch") and "did you mean `train.epochs`?" in line("train.epoch")
    assert "did you mean `train`?" in line("trian")


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["model.zzzzzz=1"])
    assert "`model.zzzzzz` is not a recipe field (from override `model.zzzzzz=1`)" in str(exc.value)
    assert "allowed keys here: base, max_length" in str(exc.value)


def test_unknown_key_inside_a_data_file_gets_a_suggestion(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["data.train.licence=MIT"])
    assert "did you mean `data.train.license`?" in str(exc.value)


def test_missing_required_keys_are_named(tmp_path):
    path = write(tmp_path / "r.yaml", {"data": {"text_field": "body"}})
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert f"`name` is required (from {path}): Run name" in str(exc.value)
    assert f"`data.train` is required (from {path}): Training data." in str(exc.value)


@pytest.mark.parametrize("content, words", [
    ("name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "YAML mapping"),
    ("", "YAML mapping"),
])
def test_unreadable_recipe_files(tmp_path, content, words):
    path = tmp_path / "r.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecipeError, match=words):
        load_recipe(path)


def test_recipe_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError, match="not valid UTF-8"):
        load_recipe(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("override, key", [("data.train=", "data.train.path"), ("train={epochs: -1}", "train.epochs")])
def test_problem_from_a_parent_override_is_attributed_to_it(minimal, override, key):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, [override])
    assert f"`{key}`" in str(exc.value)
    assert f"(from override `{override}`)" in str(exc.value)



def test_capitalised_top_level_key_is_reported(tmp_path):
    path = write(tmp_path / "r.yaml", "name: x\nData:\n  train: t.jsonl\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert "`Data` is not a recipe field" in str(exc.value) and "`data` is required" in str(exc.value)


def test_capitalised_nested_key_is_reported_with_a_suggestion(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["train.Epochs=3"])
    assert "`train.Epochs` is not a recipe field (from override `train.Epochs=3`)" in str(exc.value)
    assert "did you mean `train.epochs`?" in str(exc.value)


def test_columns_must_be_distinct(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["data.slice_fields=[label]"])
    assert "must be distinct" in str(exc.value) and "'label'" in str(exc.value)


def test_columns_conflict_names_the_data_section_and_the_override(minimal):
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, ["data.label_field=text"])
    text = str(exc.value)
    assert "(top level)" not in text
    assert "`data" in text
    assert "'name': 'mini'" not in text  # no dump of the whole recipe
    assert "override `data.label_field=text`" in text


# ---------------------------------------------------------------- fingerprint and reference


def test_fingerprint_follows_training_settings_not_output_dir(minimal):
    base = load_recipe(minimal).fingerprint()
    assert re.fullmatch(r"[0-9a-f]{8}", base)
    assert load_recipe(minimal).fingerprint() == base  # stable
    assert load_recipe(minimal, ["output_dir=/somewhere/else"]).fingerprint() == base
    for change in ("train.lr=3e-5", "train.epochs=2", "seed=1", "model.max_length=64", "data.labels=[a, b]"):
        assert load_recipe(minimal, [change]).fingerprint() != base, change


def test_fingerprint_does_not_depend_on_key_order(tmp_path):
    a = write(tmp_path / "a.yaml", "name: x\ntrain: {lr: 0.001, epochs: 2}\ndata: {train: t.jsonl}\n")
    b = write(tmp_path / "b.yaml", "data: {train: t.jsonl}\ntrain: {epochs: 2, lr: 0.001}\nname: x\n")
    assert load_recipe(a).fingerprint() == load_recipe(b).fingerprint()


def _all_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        nested = [a for a in (info.annotation, *getattr(info.annotation, "__args__", ()))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and nested[0] is not DataFile:
            out += _all_fields(nested[0], f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_recipe_reference_lists_every_field_with_its_description():
    ref = recipe_reference()
    rows = [line for line in ref.splitlines() if line.startswith("| `")]
    keys = [re.match(r"\| `([^`]+)`", line).group(1) for line in rows]
    expected = _all_fields(Recipe)
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys))
    for key in ("name", "data.train", "data.on_error", "train.epochs", "train.checkpoint_every_steps",
                "evaluate.bootstrap_samples", "card.license"):
        assert key in keys
    for line in rows:
        assert not line.rstrip().endswith("|  |"), f"no description: {line}"
    assert "| `name` | `str` | `required` |" in ref
    assert "| `train.epochs` | `float` | `8` |" in ref


def test_recipe_reference_is_a_well_formed_markdown_table():
    for line in recipe_reference().splitlines():
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        assert len(cells) == 4, line


def test_readme_recipe_reference_is_current():
    """The README's recipe table is generated from the schema; a field change must regenerate it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert recipe_reference() in readme, "README is stale: paste the output of `tunewise recipe-reference`"


# ---------------------------------------------------------------- the model's licence against its data's


@pytest.mark.parametrize("data_licence, expected", [
    ("CC-BY-4.0", "apache-2.0"),
    ("CC BY-NC-SA 4.0", "cc-by-nc-sa-4.0"),           # read loosely, written as the hub id
    ("custom-research-non-commercial", "other"),       # no hub id for it
    (None, "apache-2.0"),                              # undeclared: the audit flags it, the card says so
])
def test_auto_card_licence_carries_non_commercial_data_terms(data_licence, expected):
    recipe = validate_recipe({"name": "x", "data": {"train": {"path": "t.jsonl", "license": data_licence}}})
    assert recipe.card.license == expected


def test_a_permissive_card_licence_over_non_commercial_data_is_refused():
    raw = {"name": "x", "data": {"train": {"path": "t.jsonl", "license": "CC-BY-NC-4.0"}},
           "card": {"license": "apache-2.0"}}
    with pytest.raises(RecipeError, match=r"card.license 'apache-2.0' would allow commercial use .* data.train, "
                                          r"which is licensed CC-BY-NC-4.0 .* picks 'cc-by-nc-4.0'"):
        validate_recipe(raw)
    raw["card"]["license"] = "cc-by-nc-4.0"
    assert validate_recipe(raw).card.license == "cc-by-nc-4.0"
    raw["card"]["license"] = "other"  # the terms stated in the card by hand
    assert validate_recipe(raw).card.license == "other"


@pytest.mark.parametrize("example, licence, data_terms", [
    ("dialogsum.yaml", "cc-by-nc-sa-4.0", "CC-BY-NC-SA-4.0"),
    ("multi30k.yaml", "other", "custom-research-non-commercial"),
])
def test_non_commercial_examples_ship_a_non_commercial_card(example, licence, data_terms):
    """The examples trained on non-commercial data: their card carries the data's terms, and putting apache-2.0
    back (what they once shipped) is refused at recipe time, naming the field and the data file's licence."""
    from tunewise.card.model_card import data_licences
    from tunewise.licences import hub_licence_name, model_licence_note

    recipe = load_recipe(REPO / "examples" / example)
    assert recipe.card.license == licence
    assert load_recipe(REPO / "examples" / example, ["card.license=auto"]).card.license == licence
    note = model_licence_note(recipe.card.license, data_licences(recipe))
    assert note.startswith(f"{licence}: non-commercial use only") and f"data.train ({data_terms})" in note
    assert hub_licence_name(recipe.card.license, data_licences(recipe)) == (
        data_terms.lower() if licence == "other" else None)
    with pytest.raises(RecipeError, match=rf"card.license 'apache-2.0' would allow commercial use .* data.train, "
                                          rf"which is licensed {data_terms}"):
        load_recipe(REPO / "examples" / example, ["card.license=apache-2.0"])


def test_run_id_does_not_depend_on_where_the_checkout_sits(tmp_path):
    """Two clones of the same recipe and data get one run id; changed data gets another."""
    ids = []
    for clone in ("clone_a", "nested/clone_b"):
        folder = tmp_path / clone / "examples"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "train.jsonl").write_text('{"text": "hello", "label": "a"}\n')
        ids.append(load_recipe(write(folder / "r.yaml", "name: x\ndata: {train: data/train.jsonl}\n")).fingerprint())
    assert ids[0] == ids[1]
    resolved = load_recipe(tmp_path / "clone_a" / "examples" / "r.yaml")
    assert validate_recipe(yaml.safe_load(resolved.to_yaml())).fingerprint() == ids[0]  # the run's own recipe.yaml
    (tmp_path / "clone_a" / "examples" / "data" / "train.jsonl").write_text('{"text": "bye", "label": "a"}\n')
    assert load_recipe(tmp_path / "clone_a" / "examples" / "r.yaml").fingerprint() != ids[0]


@pytest.mark.parametrize("override", ["train.packing=true", "train.gradient_checkpointing=true",
                                      "train.compile=true", "train.micro_batch_tokens=512"])
def test_causal_only_train_options_are_refused_for_a_classifier(minimal, override):
    # the encoder trainer ignores them, so a classifier recipe that sets one would silently run without it
    with pytest.raises(RecipeError) as exc:
        load_recipe(minimal, [override])
    assert f"{override.split('=')[0]} apply to causal LMs" in str(exc.value)
    assert "task 'classification'" in str(exc.value)
    assert load_recipe(minimal, [override, "task=generation", "data.prompt_field=text",
                                 "data.completion_field=label"]).task == "generation"
