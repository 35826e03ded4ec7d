"""`tunewise human-eval`: start the annotation page, invite annotators, compute results, and trade items and
ratings with Label Studio. Light at import: everything heavy is imported inside the command bodies.

    tunewise human-eval RUN [--against base|OTHER_RUN] [--n 60] [--mode pairwise|likert]   (= `serve RUN`)
    tunewise human-eval invite RUN NAME
    tunewise human-eval results RUN
    tunewise human-eval labelstudio-export RUN [--out FILE]
    tunewise human-eval labelstudio-import RUN EXPORT.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

RunArg = Annotated[Path, typer.Argument(help="A run directory of a generation or chat run, e.g. runs/dialogsum-1a2b3c4d.")]
AgainstOpt = Annotated[Optional[str], typer.Option(
    "--against", help="The other side: `base` (the base model zero-shot, from the run's eval/) or another run "
                      "directory evaluated on the same test rows. Default: base.")]
NOpt = Annotated[Optional[int], typer.Option("--n", min=1, help="Test rows to sample (default: the recipe's "
                                                                "humaneval.n, 60).")]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="pairwise (A / B / tie) or likert (1-5 per "
                                                               "criterion). Default: the recipe's humaneval.mode.")]
OverlapOpt = Annotated[Optional[float], typer.Option("--overlap", min=0.0, max=1.0, help="Share of items every "
                                                     "annotator rates, for agreement (default: humaneval.overlap).")]
NewOpt = Annotated[bool, typer.Option("--new", help="Start a new study; the old ratings database is kept beside "
                                                    "it as ratings.sqlite.<time>.bak.")]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for other machines).")]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")]


class DefaultServeGroup(TyperGroup):
    """`human-eval RUN ...` means `human-eval serve RUN ...`: a first argument that is not a command name is the
    run directory of the default command (a run directory literally named like a command: use `serve`)."""

    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["serve", *args]
        return super().parse_args(ctx, args)


human_eval = typer.Typer(cls=DefaultServeGroup, no_args_is_help=True, help=(
    "Human evaluation in the browser: `tunewise human-eval RUN` starts the page, `invite RUN NAME` prints an "
    "annotator's link, `results RUN` writes humaneval/results.json."))


def _echo(message: str) -> None:
    typer.echo(message)


def _asked(**given: object) -> set[str]:
    return {k for k, v in given.items() if v is not None}


def _open(run_dir: Path, *, mode, n, against, overlap, new: bool = False):  # noqa: ANN001, ANN202
    from tunewise.humaneval.study import open_study, settings_for
    from tunewise.rundir import RunDir

    rd = RunDir.open(run_dir)
    settings = settings_for(rd, mode=mode, n=n, against=against, overlap=overlap)
    store, study = open_study(rd, settings, asked=_asked(mode=mode, n=n, against=against, overlap=overlap),
                              new=new, echo=_echo)
    return rd, store, study


@human_eval.command("serve")
def serve(run_dir: RunArg, against: AgainstOpt = None, n: NOpt = None, mode: ModeOpt = None,
          overlap: OverlapOpt = None, new: NewOpt = False, host: HostOpt = "127.0.0.1", port: PortOpt = 8765) -> None:
    """Start the annotation page for RUN (the study is sampled on first start; later starts resume it)."""
    from tunewise.humaneval.server import serve as serve_app

    rd, store, study = _open(run_dir, mode=mode, n=n, against=against, overlap=overlap, new=new)
    overview = store.annotator_overview()
    if not overview:
        _echo(f"human-eval: invite annotators with `tunewise human-eval invite {run_dir} NAME`")
    else:
        _echo("human-eval: annotators: " + ", ".join(f"{a['name']} ({a['rated']} rated)" for a in overview))
    serve_app(store, study, rd.root.name, host=host, port=port, echo=_echo)


@human_eval.command("invite")
def invite(run_dir: RunArg, name: Annotated[str, typer.Argument(help="The annotator's name (shown in the results).")],
           host: Annotated[str, typer.Option("--host", help="Host name in the link (where the page is served).")] = "127.0.0.1",
           port: PortOpt = 8765, against: AgainstOpt = None, n: NOpt = None, mode: ModeOpt = None,
           overlap: OverlapOpt = None) -> None:
    """Print NAME's personal link (its token is stored hashed; inviting NAME again replaces the old link and keeps
    their ratings). Creates the study first when there is none."""
    _, store, _ = _open(run_dir, mode=mode, n=n, against=against, overlap=overlap)
    token, is_new = store.invite(name)
    _echo(f"{name}: http://{host}:{port}/a/{token}" + ("" if is_new else "  (new link; the old one no longer works)"))


@human_eval.command("results")
def results(run_dir: RunArg) -> None:
    """Freeze the ratings (humaneval/ratings.jsonl) and write humaneval/results.json: win rate or Likert means
    with CIs, per-annotator counts, agreement."""
    from tunewise.pipeline import run_stage
    from tunewise.rundir import RunDir

    from tunewise.errors import TunewiseError
    from tunewise.stages import RunOptions

    rd = RunDir.open(run_dir)
    _echo(run_stage(rd, "humaneval").message)
    _echo(f"results: {rd.stage_dir('humaneval') / 'results.json'}")
    if rd.is_done("card"):  # the card shows these results: bring it up to date (the card is not their upstream)
        try:
            _echo(run_stage(rd, "card", RunOptions(force=True)).message)
        except TunewiseError as exc:
            _echo(f"card not refreshed ({exc}); `tunewise card {run_dir} --force` shows the results once it can run")


@human_eval.command("labelstudio-export")
def labelstudio_export(run_dir: RunArg, out: Annotated[Optional[Path], typer.Option(
        "--out", help="Folder for the Label Studio files (default: ./<run>-labelstudio/).")] = None,
        against: AgainstOpt = None, n: NOpt = None, mode: ModeOpt = None, overlap: OverlapOpt = None) -> None:
    """Write the study's items as a Label Studio import file (tasks.json) and its labeling config (config.xml)."""
    from tunewise.humaneval.labelstudio import export_tasks

    rd, store, study = _open(run_dir, mode=mode, n=n, against=against, overlap=overlap)
    folder = out or Path(f"{rd.root.name}-labelstudio")
    tasks, config = export_tasks(store, study, folder)
    _echo(f"labelstudio: {tasks} ({len(store.items())} tasks) and {config}: create a project with the config, "
          f"import the tasks, and bring the export back with `tunewise human-eval labelstudio-import {run_dir} "
          f"EXPORT.json`")


@human_eval.command("labelstudio-import")
def labelstudio_import(run_dir: RunArg, export: Annotated[Path, typer.Argument(
        help="A Label Studio JSON export of a project made from `labelstudio-export`.")]) -> None:
    """Add the ratings of a Label Studio JSON export to the study (each Label Studio user is one annotator,
    named labelstudio:<user>; a rating already imported counts once)."""
    from tunewise.humaneval.labelstudio import import_export

    _, store, study = _open(run_dir, mode=None, n=None, against=None, overlap=None)
    added, skipped = import_export(store, study, export)
    _echo(f"labelstudio: {added} ratings added from {export}" + (f", {skipped} already there" if skipped else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(human_eval, name="human-eval")
