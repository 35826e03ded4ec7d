"""The data stage's entry in the registry: read the recipe's files, write data/."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.data.prepare import data_files, prepare_data

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    return rd.run_stage("data", lambda out: prepare_data(rd.recipe, out), external_inputs=data_files(rd.recipe),
                        force=options.force)
