"""humaneval/results.json: what human annotators said about the fine-tuned model's test outputs, computed by
`tunewise human-eval results RUN` from the ratings collected in the browser (or imported from Label Studio).

The live ratings database (humaneval/ratings.sqlite) is state, not evidence: the ratings these numbers come from are
frozen beside this file as humaneval/ratings.jsonl, whose sha256 the file records, and `tunewise verify` covers both.
A pairwise study gives the win rate; a Likert study gives mean scores per criterion. The card reads this file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunewise.artifacts.base import Artifact, Strict


class Interval(Strict):
    """A share or a mean with its percentile bootstrap interval, resampling items (an item's ratings move together,
    so several annotators on one item do not narrow the interval as if they were independent)."""

    value: float | None = Field(description="The estimate; null when nothing was rated.")
    ci_low: float | None = Field(description="Lower bound; null without an interval (fewer than 2 items).")
    ci_high: float | None = Field(description="Upper bound; null without an interval.")
    n: int = Field(description="Ratings the estimate rests on.")
    n_items: int = Field(description="Items those ratings cover (the bootstrap's units).")


class Agreement(Strict):
    """Inter-annotator agreement on the items rated by more than one annotator."""

    method: Literal["cohen_kappa", "cohen_kappa_quadratic", "krippendorff_alpha_nominal",
                    "krippendorff_alpha_ordinal"] | None = Field(
        description="Cohen's kappa (scikit-learn) for two annotators, quadratic-weighted for Likert scores; "
                    "Krippendorff's alpha (the `krippendorff` package) for more; null when it cannot be computed.")
    value: float | None = Field(description="The coefficient; null when it cannot be computed (see `note`).")
    raw_agreement: float | None = Field(description="Share of annotator pairs on a shared item that gave the same "
                                                    "rating; null without shared items.")
    n_items: int = Field(description="Items rated by two or more annotators.")
    n_annotators: int = Field(description="Annotators who rated at least one of those items.")
    note: str | None = Field(description="Why the coefficient is missing, or how to read it; null otherwise.")


class PairwiseResult(Strict):
    """Pairwise: each rating says which output was better (or a tie), mapped back from the shown sides."""

    wins: int = Field(description="Ratings preferring the fine-tuned output.")
    losses: int = Field(description="Ratings preferring the other output.")
    ties: int = Field(description="Ratings calling a tie.")
    win_rate: Interval = Field(description="wins / all ratings (ties count as not-wins).")
    tie_rate: Interval = Field(description="ties / all ratings.")
    loss_rate: Interval = Field(description="losses / all ratings.")
    decided_win_rate: Interval = Field(description="wins / (wins + losses): the win rate among decided ratings.")
    items_won: int = Field(description="Items whose annotators' majority preferred the fine-tuned output.")
    items_lost: int = Field(description="Items whose majority preferred the other output.")
    items_tied: int = Field(description="Items whose majority was a tie, or split.")
    sign_test_p: float | None = Field(description="Two-sided binomial test of items_won against items_lost "
                                                  "(null when no item is decided).")
    agreement: Agreement = Field(description="Agreement on the verdict (fine-tuned, other, tie).")


class CriterionScores(Strict):
    """One Likert criterion: the mean 1-5 score of each side and their paired difference."""

    fine_tuned: Interval = Field(description="Mean score of the fine-tuned outputs.")
    other: Interval = Field(description="Mean score of the other side's outputs.")
    difference: Interval = Field(description="Mean of (fine-tuned - other) over (annotator, row) pairs that scored "
                                             "both outputs of a row.")
    agreement: Agreement = Field(description="Agreement on this criterion's scores.")


class AnnotatorCounts(Strict):
    """One annotator's share of the work."""

    ratings: int = Field(description="Items rated.")
    shared: int = Field(description="Of those, items every annotator gets (the agreement set).")
    wins: int | None = Field(description="Pairwise: ratings preferring the fine-tuned output; null for Likert.")
    losses: int | None = Field(description="Pairwise: ratings preferring the other output; null for Likert.")
    ties: int | None = Field(description="Pairwise: ties; null for Likert.")
    source: Literal["browser", "labelstudio"] = Field(description="Where the ratings came from.")


class HumanEvalResults(Artifact):
    """humaneval/results.json: the human evaluation of a run's test outputs: pairwise win rate with CIs (ties
    reported as ties) or Likert means with CIs, per-annotator counts, agreement, and the hash of the frozen ratings
    the numbers were computed from."""

    FILE = "results.json"
    STAGE = "humaneval"
    SCHEMA_VERSION = 1

    mode: Literal["pairwise", "likert"] = Field(description="The study's mode.")
    against: str = Field(description="The other side: `base_model` (the base model zero-shot, from this run's "
                                     "eval/) or the other run directory's id.")
    against_description: str = Field(description="The other side in words.")
    criteria: list[str] = Field(description="Likert criteria (empty for pairwise).")
    n_items: int = Field(description="Items in the study.")
    n_rows: int = Field(description="Test rows sampled (likert has two items per row).")
    n_rated_items: int = Field(description="Items with at least one rating.")
    n_ratings: int = Field(description="Ratings in total.")
    n_annotators: int = Field(description="Annotators with at least one rating.")
    overlap: float = Field(description="Share of items meant for every annotator.")
    n_shared_items: int = Field(description="Items meant for every annotator.")
    seed: int = Field(description="Seed of the item sample, orders and sides (the recipe's seed).")
    sources: dict[str, str] = Field(description="The predictions files the items were sampled from (path -> "
                                                "sha256 when the study began).")
    pairwise: PairwiseResult | None = Field(description="The pairwise result; null for a Likert study.")
    likert: dict[str, CriterionScores] | None = Field(description="Per criterion; null for a pairwise study.")
    annotators: dict[str, AnnotatorCounts] = Field(description="Per annotator name.")
    confidence: float = Field(description="Confidence level of the intervals (evaluate.confidence).")
    n_resamples: int = Field(description="Bootstrap resamples (evaluate.bootstrap_samples).")
    ratings_file: str = Field(description="The frozen ratings, relative to the run directory.")
    ratings_sha256: str = Field(description="sha256 of that file: the ratings these numbers were computed from.")
