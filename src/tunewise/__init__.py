"""tunewise: supervised fine-tuning with evidence.

Importing tunewise makes the library offline by default, for the Python API and the CLI alike: nothing is fetched
from a model hub unless the user opts in with HF_HUB_OFFLINE=0. This must happen before huggingface_hub is
imported, which reads the variable once.
"""

import os as _os
import warnings as _warnings

_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# raised inside transformers/peft on every LoRA load in transformers 5.x; nothing a user can act on
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

__version__ = "0.1.0"


def run(recipe, overrides=None, *, resume: bool = False, force: bool = False, echo=print):
    """Run every stage of a recipe (a YAML path or a Recipe); returns the run directory. Same as `tunewise run`."""
    from tunewise.pipeline import run as run_pipeline

    return run_pipeline(recipe, overrides, resume=resume, force=force, echo=echo)
