"""The run's own model, as the monitor needs it: its tokenizer (for token counts) and, for a classifier, batched
predictions (label and confidence) of texts the log did not carry predictions for. Loaded through the Task
protocol from model/, never through another stage's code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewise.recipe import Recipe


@dataclass
class _Text:  # what Task.predict reads of a row
    text: str
    text_pair: str | None = None


class RunModel:
    """`tokenizer`, and for classifiers `predict(texts) -> (labels, confidences)` batched."""

    def __init__(self, recipe: Recipe, model_dir: Path, labels: Sequence[str] | None, *, load_model: bool):
        from tunewise.hardware import choose_placement
        from tunewise.tasks import task_for

        self.recipe = recipe
        self.task = task_for(recipe)
        self.labels = list(labels) if labels else None
        self.tokenizer = self.task.load_tokenizer(model_dir)
        self.model_dir = model_dir
        self.can_predict = load_model and self.task.family == "classifier"
        self.model = None  # loaded on the first predict: a log that carries the server's predictions never needs it
        if self.can_predict:
            self.placement = choose_placement(recipe.train.device, recipe.train.precision)

    def predict(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(predicted labels, top-class confidence, class probabilities), row i for texts[i]."""
        if self.model is None:
            self.model = self.task.load_model(self.model_dir)
        probs = self.task.predict(self.model, self.tokenizer, [_Text(t) for t in texts], self.recipe, self.placement)
        top = probs.argmax(1)
        return [self.labels[i] for i in top], probs[np.arange(len(top)), top], probs
