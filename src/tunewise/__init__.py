"""tunewise: supervised fine-tuning with evidence."""

__version__ = "0.1.0"


def run(recipe, overrides=None, *, resume: bool = False, force: bool = False):
    """Run every stage of a recipe; returns the run directory path. Same as `tunewise run`."""
    from tunewise.pipeline import run as _run

    return _run(recipe, overrides, resume=resume, force=force)
