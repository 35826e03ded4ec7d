"""The gate stage: the release decision. Reads the typed artifacts of evaluate, audit and probes, judges every rule
of the recipe's `gate:` section (tunewise.gate.rules) and writes gate/gate.json. The stage itself never fails on a
failed rule: the card shows the verdict, and `tunewise run` exits 3 after everything is written.

The serving rules read servebench/bench.json, which `tunewise serve-bench RUN` writes after the run (the gate stage
reads only that artifact, never the serve package); when it changes, `tunewise gate RUN` re-judges.

The gate section is not part of the run id (Recipe.fingerprint), so changing it re-judges the same run:
`tunewise gate RUN gate.key=value` (tunewise.gate.recheck) records the new section in the run's recipe.yaml and
manifest, then reruns this stage and the card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tunewise.artifacts.gate import Gate

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def _judged_section(folder: Path) -> dict | None:
    """The gate section the existing gate.json was judged against (None when there is none to compare)."""
    try:
        return json.loads((folder / Gate.FILE).read_text(encoding="utf-8")).get("section")
    except (OSError, ValueError, AttributeError):
        return None


def _outside_evidence_changed(rd: "RunDir") -> bool:
    """Whether evidence from outside the gate's upstream stages changed since gate.json was judged: the serving
    benchmark (servebench/bench.json) is written after the run by `tunewise serve-bench`, so it is not part of the
    stage's inputs key; compare its hash with the one each serving rule recorded."""
    from tunewise.artifacts.serve import ServeBenchmark
    from tunewise.rundir import sha256_file

    try:
        rules = json.loads((rd.stage_dir("gate") / Gate.FILE).read_text(encoding="utf-8")).get("rules", [])
    except (OSError, ValueError, AttributeError):
        return False
    rel = f"{ServeBenchmark.folder()}/{ServeBenchmark.FILE}"
    path = rd.root / rel
    now = sha256_file(path) if path.is_file() else None
    return any(r.get("evidence") == rel and r.get("evidence_sha256") != now for r in rules if isinstance(r, dict))


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.gate.rules import judge

    section = rd.recipe.gate.model_dump(mode="json")

    def write(out: Path) -> str:
        verdicts = judge(rd.root, rd.recipe)
        gate = Gate(passed=all(v.passed for v in verdicts), rules=verdicts, section=section,
                    judged_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        gate.write(out)
        return "\n".join(gate.verdict_lines())

    # the section is left out of the stage's inputs key (it is not part of the run id): compare it here
    changed = _judged_section(rd.stage_dir("gate")) != section or _outside_evidence_changed(rd)
    return rd.run_stage("gate", write, force=options.force or changed)


def read_gate(rd: "RunDir") -> Gate:
    return Gate.read(rd.stage_dir("gate") / Gate.FILE)


def recheck(run_dir: str | Path, overrides: list[str], *, echo: Callable[[str], None] = print) -> Gate:
    """`tunewise gate RUN [gate.key=value ...]`: judge a finished run against its gate section with these overrides,
    without retraining or re-evaluating. Only `gate.*` keys may change. The new section is recorded (recipe.yaml,
    manifest.json `recipe_changes`), then the gate and card stages rerun, so `tunewise verify` still passes."""
    from tunewise.errors import RecipeError
    from tunewise.recipe import apply_overrides, parse_override, validate_recipe
    from tunewise.rundir import RECIPE, RunDir
    from tunewise.stages import RunOptions, get

    rd = RunDir.open(run_dir)
    for item in overrides:
        key = parse_override(item)[0]
        if key != "gate" and not key.startswith("gate."):
            raise RecipeError(f"`tunewise gate` changes only the gate section, but `{item}` changes `{key}`; that "
                              f"needs a new run: `tunewise run {rd.root / RECIPE} {item}`")
    raw, origin = apply_overrides(rd.recipe.model_dump(mode="json"), overrides)
    recipe = validate_recipe(raw, source=str(rd.root / RECIPE), origin=origin)
    rd.require("evaluate", "gate")
    rd.record_gate_section(recipe, why="tunewise gate " + " ".join(overrides) if overrides else "tunewise gate")
    outcome = get("gate").run(rd, RunOptions())
    if get("card").enabled(rd.recipe) and rd.is_done("card"):
        echo(get("card").run(rd, RunOptions()).message)  # the card shows the new verdict
    gate = read_gate(rd)
    if not outcome.ran:
        echo(f"gate: rules unchanged since {gate.judged_at}")
    return gate
