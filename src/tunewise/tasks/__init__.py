"""The Task protocol: what a stage may ask of a task, so that stages do not branch on the task.

Two implementations: `ClassificationTask` (an encoder with a classification head: text -> label) and
`CausalLMTask` (a causal LM trained on messages: `generation` and `chat`). `task_for(recipe)` picks one.
A stage calls the interface — rows, text views, encode, collate, predict, prediction rows, card sections — and
never tests `recipe.task` itself. Where a stage needs a task-specific algorithm that is its own business (the
classifier's Trainer loop against the causal LM's trained-positions loss), it looks the implementation up by
`task.family` in one table, next to the code.

This module imports nothing heavy; the implementations import torch and transformers when first called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from tunewise.hardware import Placement
    from tunewise.recipe import Recipe

from tunewise.tasks.sides import TextSides

Family = Literal["classifier", "causal_lm"]


class Task(Protocol):
    """The interface every task implements. Attributes are facts about the task; methods are its parts."""

    name: str                 # the recipe's `task`
    family: Family            # which model family trains and predicts it
    has_labels: bool          # rows carry a class label (label checks, per-class scores, calibration)
    has_prompts: bool         # rows are prompt -> reply (prompt leakage, mask previews, generation settings)
    export_in_run: bool       # `tunewise run` ends with export/ (a merged folder that vLLM serves)
    auto_class: str           # the transformers Auto class that loads the fine-tuned folder
    pipeline_tag: str         # the Hugging Face pipeline tag of the fine-tuned model
    baseline_choices: tuple[str, ...]  # the baselines `evaluate.baselines` may name for this task
    record_kind: str          # "row" or "example": how artifacts.rows reads a data/ line of this task
    card_sections: tuple[str, ...]  # card/ template partials the card and report include, in order

    def default_finetune(self) -> str: ...
    def default_baselines(self) -> list[str]: ...
    def best_metric(self) -> str: ...
    def headline_metrics(self) -> tuple[str, ...]: ...

    def read_split(self, data_dir: Path, split: str) -> list[Any]: ...
    def sides(self, record: dict[str, Any]) -> TextSides: ...

    def load_tokenizer(self, path: Path): ...
    def load_model(self, path: Path, **kwargs): ...
    def encode(self, tokenizer, rows: Sequence[Any], recipe: "Recipe", *, split: str): ...
    def collator(self, tokenizer): ...
    def predict(self, model, tokenizer, rows: Sequence[Any], recipe: "Recipe", placement: "Placement",
                **kwargs): ...
    def prediction_rows(self, rows: Sequence[Any], outputs: Any, **kwargs) -> list[dict[str, Any]]: ...

    def map_texts(self, record: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]: ...
    def token_lengths(self, counter: Any, records: Sequence[dict[str, Any]]) -> Any: ...


def task_for(recipe_or_name: "Recipe | str") -> Task:
    """The Task implementation for a recipe (or a task name)."""
    name = recipe_or_name if isinstance(recipe_or_name, str) else recipe_or_name.task
    if name == "classification":
        from tunewise.tasks.kinds import ClassificationTask

        return ClassificationTask()
    if name in ("generation", "chat"):
        from tunewise.tasks.kinds import CausalLMTask

        return CausalLMTask(name)
    from tunewise.errors import RecipeError

    raise RecipeError(f"task {name!r} is not a tunewise task; expected one of: classification, generation, chat")


__all__ = ["Family", "Task", "TextSides", "task_for"]
