"""Label Studio, for teams that already annotate there: the study's items as an import file with a matching
labeling config, and a Label Studio JSON export read back as ratings.

Label Studio shows every annotator the same sides, so the sides are randomised per item only (seeded, as for an
annotator named `labelstudio`); which side holds the fine-tuned output is not in the task data (the data manager
would show it), it is recomputed on import. Each Label Studio user becomes one annotator, `labelstudio:<user>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunewise.errors import DataError
from tunewise.humaneval.items import FINE_TUNED, OTHER, HumanEvalError
from tunewise.humaneval.store import LABELSTUDIO, Annotator, Store, Study, check_scores
from tunewise.rundir import atomic_write_json, atomic_write_text

TASKS_FILE, CONFIG_FILE = "tasks.json", "config.xml"
SIDE_OWNER = Annotator(0, LABELSTUDIO, LABELSTUDIO)  # whose seeded sides the Label Studio tasks show


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def labeling_config(study: Study) -> str:
    """The Label Studio labeling config (XML) the exported tasks are meant for."""
    head = ['<View>', '  <Header value="Prompt"/>', '  <Text name="prompt" value="$prompt"/>']
    if study.mode == "pairwise":
        body = ['  <View style="display: flex; gap: 1em;">',
                '    <View style="flex: 1;"><Header value="A"/><Text name="output_a" value="$output_a"/></View>',
                '    <View style="flex: 1;"><Header value="B"/><Text name="output_b" value="$output_b"/></View>',
                '  </View>',
                '  <Choices name="preference" toName="prompt" choice="single" required="true" showInline="true">',
                '    <Choice value="A" hotkey="a"/>', '    <Choice value="tie" hotkey="t"/>',
                '    <Choice value="B" hotkey="b"/>', '  </Choices>']
    else:
        body = ['  <Header value="Output"/>', '  <Text name="output" value="$output"/>']
        body += [f'  <Header value="{_xml(c)}"/>\n  <Rating name="{_xml(c)}" toName="output" maxRating="5" '
                 f'required="true"/>' for c in study.criteria]
    tail = ['  <TextArea name="comment" toName="prompt" placeholder="Comment (optional)" maxSubmissions="1"/>',
            '</View>']
    return "\n".join(head + body + tail) + "\n"


def _prompt_text(context: list[dict[str, str]]) -> str:
    if len(context) == 1 and context[0]["role"] == "user":
        return context[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in context)


def export_tasks(store: Store, study: Study, folder: Path) -> tuple[Path, Path]:
    """Write folder/tasks.json (Label Studio import) and folder/config.xml (its labeling config)."""
    tasks = []
    for item in store.items():
        data: dict[str, Any] = {"item": item.id, "prompt": _prompt_text(item.context)}
        if study.mode == "pairwise":
            side = Store.fine_tuned_side(study, SIDE_OWNER, item.id)
            first, second = (FINE_TUNED, OTHER) if side == "A" else (OTHER, FINE_TUNED)
            data.update(output_a=item.outputs[first], output_b=item.outputs[second])
        else:
            data["output"] = next(iter(item.outputs.values()))
        tasks.append({"data": data})
    folder = Path(folder)
    atomic_write_json(folder / TASKS_FILE, tasks)
    atomic_write_text(folder / CONFIG_FILE, labeling_config(study))
    return folder / TASKS_FILE, folder / CONFIG_FILE


def _user(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if who is None or who == "":
        raise ValueError("`completed_by` is missing")
    return f"{LABELSTUDIO}:{who}"


def _rating(study: Study, result: list[dict[str, Any]]) -> tuple[str | None, dict[str, int] | None, str]:
    """(choice, scores, comment) from one annotation's `result` list; ValueError naming what is wrong."""
    choice, scores, comment = None, {}, ""
    for r in result:
        name, value = r.get("from_name"), r.get("value") or {}
        if name == "preference":
            picked = value.get("choices") or []
            if len(picked) != 1 or picked[0] not in ("A", "B", "tie"):
                raise ValueError(f"`preference` must be one of A, B, tie; got {picked}")
            choice = picked[0]
        elif name == "comment":
            comment = " ".join(value.get("text") or [])
        elif name in study.criteria:
            scores[name] = value.get("rating")
    if study.mode == "pairwise":
        if choice is None:
            raise ValueError("no `preference` choice")
        return choice, None, comment
    try:
        check_scores(scores, study.criteria)
    except HumanEvalError as exc:
        raise ValueError(str(exc)) from None
    return None, scores, comment


def import_export(store: Store, study: Study, path: Path) -> tuple[int, int]:
    """Add a Label Studio JSON export's ratings. Returns (added, already there). Any bad task is an error naming
    the file, the task's index and the field; nothing is added then."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(tasks, list):
        raise DataError(f"{path}: expected Label Studio's JSON export (a list of tasks with `annotations`); "
                        f"export the project as JSON, not JSON-MIN or CSV")
    known = {it.id for it in store.items()}
    parsed = []
    for i, task in enumerate(tasks):
        where = f"{path}: task {i} (Label Studio id {task.get('id') if isinstance(task, dict) else '?'})"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or "annotations" not in task:
            raise DataError(f"{where}: expected `data` and `annotations` (Label Studio's JSON export)")
        item_id = task["data"].get("item")
        if item_id not in known:
            raise DataError(f"{where}: field data.item {item_id!r} is not an item of this study (export the tasks "
                            f"with `tunewise human-eval labelstudio-export` for this run)")
        for j, annotation in enumerate(task["annotations"] or []):
            if annotation.get("was_cancelled"):
                continue  # a skipped task is not a rating
            try:
                user = _user(annotation)
                choice, scores, comment = _rating(study, annotation.get("result") or [])
            except ValueError as exc:
                raise DataError(f"{where}: annotations[{j}]: {exc}") from None
            parsed.append((user, item_id, choice, scores, comment, str(annotation.get("created_at") or "")))
    added = 0
    with store.connect(write=True) as conn:
        for user, item_id, choice, scores, comment, created in parsed:
            annotator = store.annotator(user, LABELSTUDIO, conn)
            if annotator.source != LABELSTUDIO:
                raise DataError(f"{path}: annotator {user!r} already rates in the browser")
            side = Store.fine_tuned_side(study, SIDE_OWNER, item_id) if study.mode == "pairwise" else None
            added += store.add_imported(conn, study, annotator, item_id, side, choice=choice, scores=scores,
                                        comment=comment, created=created)
    return added, len(parsed) - added
