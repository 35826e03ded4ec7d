"""`tunewise data show-mask`: the first examples of a data file as the model will see them, with the tokens
that carry loss marked. Reads the recipe's raw files (not a run directory), so it works before any run."""

from __future__ import annotations

from tunewise.data.prepare import example_checker, source_name
from tunewise.data.readers import read_records
from tunewise.errors import RecipeError
from tunewise.models import resolve_base_model
from tunewise.recipe import load_recipe
from tunewise.tasks import task_for
from tunewise.tasks.causal import MASK_MARKS, TemplateError, TooLong, encode, load_tokenizer, show_mask


def mask_preview(recipe_path, overrides: list[str], *, n: int = 3, split: str = "train",
                 style: str = "plain") -> list[str]:
    """Blocks of text for `tunewise data show-mask`: the first n examples of a split with trained tokens marked."""
    recipe = load_recipe(recipe_path, overrides)
    if not task_for(recipe).has_prompts:  # only prompt -> reply tasks have a loss mask to show
        raise RecipeError(f"{recipe_path}: task '{recipe.task}' has no loss mask; show-mask is for generation and "
                          f"chat recipes")
    data_file = getattr(recipe.data, split, None) if split in ("train", "validation", "test") else None
    if data_file is None:
        raise RecipeError(f"{recipe_path}: the recipe has no data.{split} file; use --split train")
    source = source_name(data_file, split)
    examples, bad = read_records(source, example_checker(recipe, data_file, split), fmt=recipe.data.format,
                                 on_error="quarantine", max_quarantine_fraction=1.0)
    tok = load_tokenizer(resolve_base_model(recipe.model.base).path)
    on, off = MASK_MARKS[style]
    blocks = [f"{recipe.task} examples from {source} with model {recipe.model.base}: tokens between {on}{off} "
              f"carry loss; everything else is context (max_length {recipe.model.max_length}, "
              f"truncation {recipe.model.truncation})."]
    if bad:
        blocks.append(f"({len(bad)} rows of this file are invalid and not shown; first: {bad[0].message})")
    for ex in examples[:n]:
        try:
            e = encode(tok, ex, task=recipe.task, max_length=recipe.model.max_length, truncation=recipe.model.truncation)
            shown = show_mask(tok, e, style=style)
            cut = f", {e.truncated} prompt tokens cut" if e.truncated else ""
            head = f"── {ex.origin} · {len(e.input_ids)} tokens, {e.trained_tokens} trained{cut} ──"
        except (TooLong, TemplateError) as exc:
            shown, head = f"(not trainable: {exc})", f"── {ex.origin} ──"
        blocks.append(f"{head}\n{shown}")
    return blocks
