"""The checker: a tunewise classification run over (claim, evidence) sentence pairs, found from the recipe's
`evaluate.faithfulness.checker` (a run directory, or the recipe file that trains one), loaded once, and asked for
each claim's probability of being unfaithful."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import RecipeError, RunDirError
from tunewise.recipe import FaithfulnessConfig, Recipe

UNFAITHFUL = "unfaithful"  # the checker's label whose probability is the unfaithfulness score
WEIGHTS = "model.safetensors"


def train_command(recipe_path: Path) -> str:
    """How to train the checker a recipe describes: the recipe's own first-line command when it has one
    (examples start with it, data preparation included), else `tunewise run RECIPE`."""
    try:
        first = recipe_path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        first = ""
    if first.startswith("#") and "tunewise run" in first:
        return first.lstrip("# ").strip()
    return f"tunewise run {recipe_path}"


def locate(cfg: FaithfulnessConfig) -> Path:
    """The checker's run directory; a clear error, with the command that trains it, when there is none yet."""
    if cfg.checker is None:
        raise RecipeError("evaluate.faithfulness needs a checker: set evaluate.faithfulness.checker to a trained "
                          "checker's run directory or to its recipe (e.g. examples/faithfulness-checker.yaml), or "
                          "turn the stage off with evaluate.faithfulness.enabled=false")
    path = Path(cfg.checker)
    if path.is_dir():
        root, command = path, None
    elif path.is_file() and path.suffix in (".yaml", ".yml"):
        from tunewise.recipe import load_recipe

        checker_recipe = load_recipe(path)
        root = Path(checker_recipe.output_dir) / f"{checker_recipe.name}-{checker_recipe.fingerprint()}"
        command = train_command(path)
    else:
        raise RecipeError(f"evaluate.faithfulness.checker={cfg.checker}: no such run directory or recipe file; "
                          f"expected a trained checker's run directory or the .yaml recipe that trains it")
    from tunewise.rundir import RunDir

    rd = RunDir.open(root) if (root / "manifest.json").is_file() else None
    if rd is None or not (rd.is_done("train") and rd.is_done("evaluate")):
        how = (f"train it first: `{command}` (run from the folder that holds its output_dir; here that is "
               f"{Path.cwd()})" if command else f"finish that run first: `tunewise run {root / 'recipe.yaml'}`")
        raise RunDirError(f"the faithfulness checker is not trained yet: no finished run at {root.resolve()}; "
                          f"{how}")
    return root


def checker_inputs(root: Path) -> list[Path]:
    """The checker's files whose hashes decide whether the faithfulness stage must run again."""
    return [root / "model" / WEIGHTS, root / "data" / "labels.json"]


@dataclass
class Checker:
    """A loaded checker: `score(claims, evidences)` gives each claim's probability of being unfaithful."""

    root: Path
    recipe: Recipe
    task: Any
    model: Any
    tokenizer: Any
    labels: list[str]
    placement: Any

    @classmethod
    def load(cls, root: Path, placement, batch_size: int | None = None) -> "Checker":
        from tunewise.artifacts.rows import load_labels
        from tunewise.rundir import RunDir
        from tunewise.tasks import task_for

        rd = RunDir.open(root)
        task = task_for(rd.recipe)
        if task.family != "classifier" or rd.recipe.data.text_pair_field is None:
            raise RecipeError(f"evaluate.faithfulness.checker: {root} is a {rd.recipe.task} run without "
                              f"data.text_pair_field; a checker is a classification run over (claim, evidence) "
                              f"pairs (see examples/faithfulness-checker.yaml)")
        labels = load_labels(rd.stage_dir("data"))
        if UNFAITHFUL not in labels:
            raise RecipeError(f"evaluate.faithfulness.checker: {root} predicts {labels}; a checker must have the "
                              f"label '{UNFAITHFUL}'")
        model_dir = rd.stage_dir("train")
        recipe = rd.recipe.model_copy(deep=True)
        if batch_size is not None:  # claims per forward pass: the task predicts in train.eval_batch_size batches
            recipe.train.eval_batch_size = batch_size
        return cls(root, recipe, task, task.load_model(model_dir), task.load_tokenizer(model_dir), labels, placement)

    def facts(self) -> dict[str, Any]:
        from tunewise.artifacts.metrics import Metrics
        from tunewise.rundir import RunDir, sha256_file

        rd = RunDir.open(self.root)
        evaluated = Metrics.read(rd.stage_dir("evaluate") / Metrics.FILE)
        scores = evaluated.fine_tuned().metrics
        return {"run": str(self.root.resolve()), "run_id": self.root.name, "base_model": self.recipe.model.base,
                "model_sha256": sha256_file(self.root / "model" / WEIGHTS), "unfaithful_label": UNFAITHFUL,
                "test_rows": evaluated.n_scored, "test_accuracy": scores["accuracy"].value,
                "test_macro_f1": scores["macro_f1"].value}

    def validation_cut(self) -> tuple[float, str]:
        """The cut on P(unfaithful) with the highest balanced accuracy on the checker's validation split (its own
        held-out documents, scored as it was trained), and where it came from; 0.5 when there is no such split."""
        import numpy as np

        from tunewise.artifacts.rows import available_splits, load_split

        data_dir = self.root / "data"
        rows = load_split(data_dir, "validation") if "validation" in available_splits(data_dir) else []
        y = np.array([r.label == UNFAITHFUL for r in rows])
        if len(set(y.tolist())) < 2:
            return 0.5, "0.5 (the checker has no validation split with both labels to choose a cut on)"
        probs = self.task.predict(self.model, self.tokenizer, rows, self.recipe, self.placement)
        score = probs[:, self.labels.index(UNFAITHFUL)]
        cuts = np.unique(score)
        bacc = [0.5 * ((score[y] >= c).mean() + (score[~y] < c).mean()) for c in cuts]
        best = int(np.argmax(bacc))
        return float(cuts[best]), (f"auto: the best balanced accuracy ({bacc[best]:.3f}) on the checker's "
                                   f"validation split ({len(rows)} summaries)")

    def score(self, claims: list[str], evidences: list[str]):
        """P(unfaithful) per claim (a numpy array, in order)."""
        import numpy as np

        from tunewise.artifacts.rows import Row

        if not claims:
            return np.zeros(0, dtype=np.float32)
        rows = [Row(str(i), claim, self.labels[0], {}, "faithfulness", text_pair=ev)
                for i, (claim, ev) in enumerate(zip(claims, evidences))]
        probs = self.task.predict(self.model, self.tokenizer, rows, self.recipe, self.placement)
        return probs[:, self.labels.index(UNFAITHFUL)]
