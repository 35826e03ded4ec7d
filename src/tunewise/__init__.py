"""tunewise: supervised fine-tuning with evidence."""

__version__ = "0.1.0"


def run(recipe, overrides=None, *, resume: bool = False, force: bool = False, echo=print):
    """Run every stage of a recipe (a YAML path or a Recipe); returns the run directory. Same as `tunewise run`."""
    from tunewise.pipeline import run as _run

    return _run(recipe, overrides, resume=resume, force=force, echo=echo)
