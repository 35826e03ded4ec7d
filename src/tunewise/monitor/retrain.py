"""The retrain signal: what retraining would cost, measured from the run's own training speed, and the command that
retrains on the reference training data plus the recent labelled traffic."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from tunewise.artifacts.monitor import RetrainCost, RetrainSignal
from tunewise.artifacts.train import TrainSummary

RETRAIN_DIR = "retrain"


def estimate_cost(summary: TrainSummary, rows: int, cpus: int, cost_cfg) -> RetrainCost:
    """Seconds per example-epoch as measured in this run (its wall time over examples x epochs run, validation
    included), scaled to the new row count; priced per core-hour on a CPU, per GPU-hour on a GPU."""
    per_example_epoch = summary.train_seconds / max(1.0, summary.train_examples * summary.epochs_run)
    seconds = per_example_epoch * rows * summary.epochs_run
    hours = seconds / 3600
    on_gpu = summary.device.startswith("cuda")
    core_hours = None if on_gpu else hours * cpus
    gpu_hours = hours if on_gpu else None
    price = (gpu_hours * cost_cfg.price_per_gpu_hour) if on_gpu else (core_hours * cost_cfg.price_per_core_hour)
    basis = (f"model/train_summary.json: {summary.train_seconds:.1f}s for {summary.train_examples:,} examples x "
             f"{summary.epochs_run:g} epochs on {summary.device} ({cpus} CPU cores); priced at "
             f"{cost_cfg.price_per_gpu_hour if on_gpu else cost_cfg.price_per_core_hour} {cost_cfg.currency} per "
             f"{'GPU' if on_gpu else 'core'}-hour (card.cost)")
    return RetrainCost(train_rows=rows, epochs=summary.epochs_run, seconds=round(seconds, 1), device=summary.device,
                       core_hours=None if core_hours is None else round(core_hours, 4),
                       gpu_hours=None if gpu_hours is None else round(gpu_hours, 4), price=round(price, 4),
                       currency=cost_cfg.currency, basis=basis)


def write_retrain_data(rd, out: Path, feedback_file: Path | None) -> tuple[list[str], int, str | None]:
    """monitor/retrain/{train,validation,test}.jsonl in the recipe's own column names: train = the run's training
    rows plus the feedback rows; validation and test unchanged, so the retrained model is scored on the same test
    rows. Returns (files, train rows, the `tunewise run` command)."""
    from tunewise.rundir import AtomicJsonlWriter

    recipe = rd.recipe
    data = recipe.data
    folder = out / RETRAIN_DIR
    data_dir = rd.stage_dir("data")
    files, train_rows, overrides = [], 0, []

    def convert(record: dict[str, Any]) -> dict[str, Any]:
        row = {data.text_field: record["text"], data.label_field: record["label"]}
        if record.get("text_pair") is not None and data.text_pair_field:
            row[data.text_pair_field] = record["text_pair"]
        for key, value in (record.get("meta") or {}).items():
            row[key] = value
        return row

    for split in ("train", "validation", "test"):
        source = data_dir / f"{split}.jsonl"
        if not source.is_file():
            continue
        target = folder / f"{split}.jsonl"
        with AtomicJsonlWriter(target) as writer, open(source, encoding="utf-8") as fh:
            for line in fh:
                writer.write(convert(json.loads(line)))
                train_rows += split == "train"
            if split == "train" and feedback_file is not None:
                with open(feedback_file, encoding="utf-8") as fb:
                    for line in fb:
                        rec = json.loads(line)
                        writer.write({data.text_field: rec["text"], data.label_field: rec["label"]})
                        train_rows += 1
        files.append(str(target.relative_to(out.parent)))
        overrides += [f"data.{split}.path={target.resolve()}", f"data.{split}.max_rows=null"]
        if getattr(data, split) is None and data.train.license:  # a carved split: it keeps the data's licence
            overrides.append(f"data.{split}.license={data.train.license}")
    overrides += ["data.format=jsonl"]
    command = "tunewise run " + shlex.join([str((rd.root / "recipe.yaml").resolve()), *overrides])
    return files, train_rows, command


def retrain_signal(rd, out: Path, reason: str, feedback_file: Path | None, feedback_rows: int) -> RetrainSignal:
    summary = TrainSummary.read(rd.stage_dir("train") / TrainSummary.FILE)
    cpus = int(rd.manifest.get("platform", {}).get("cpu", {}).get("cpus_available") or 1)
    files, command = [], None
    rows = summary.train_examples + feedback_rows
    if feedback_rows and rd.recipe.task == "classification":
        files, rows, command = write_retrain_data(rd, out, feedback_file)
    return RetrainSignal(reason=reason, feedback_rows=feedback_rows, files=files, command=command,
                         cost=estimate_cost(summary, rows, cpus, rd.recipe.card.cost))
