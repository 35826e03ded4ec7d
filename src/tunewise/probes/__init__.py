"""The probes stage: bias and robustness probes of the fine-tuned model on the test split. Reads data/ and
model/ (through the Task protocol), writes probes/:

  probes.json              the typed artifact (tunewise.artifacts.probes.Probes)
  counterfactual.jsonl     classifiers: every identity-term variant scored (family, original, variant, labels)
  crows_pairs.jsonl        causal LMs: every CrowS-Pairs pair's scores under the base and the fine-tuned model

What is probed depends on the model family (looked up in one table in stage.py): counterfactual swaps and noise
for classifiers; CrowS-Pairs (and, when asked, noise with regeneration) for causal LMs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    from tunewise.probes.stage import external_inputs, write_probes

    return rd.run_stage("probes", lambda out: write_probes(rd.recipe, rd.stage_dir("data"), rd.stage_dir("train"),
                                                           out),
                        external_inputs=external_inputs(rd.recipe), force=options.force)
