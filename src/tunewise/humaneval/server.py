"""The annotation page: FastAPI + jinja2, plain HTML forms and a little JavaScript (keyboard shortcuts), no
external assets, so it works offline. Every rating is committed to SQLite when it is submitted; the page an
annotator loads is always their first unrated item, so a closed tab or a restarted server resumes there."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request  # this module is imported only by the serving command
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from tunewise.humaneval.items import FINE_TUNED, OTHER, HumanEvalError
from tunewise.humaneval.store import Annotator, Store, Study

def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("tunewise.humaneval", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def _shown_outputs(study: Study, item, side: str) -> list[dict[str, str]]:  # noqa: ANN001  # an Item
    """What the page shows: pairwise, A and B with the fine-tuned output on `side`; likert, the one output."""
    if study.mode == "likert":
        return [{"label": "Output", "text": next(iter(item.outputs.values()))}]
    first, second = (FINE_TUNED, OTHER) if side == "A" else (OTHER, FINE_TUNED)
    return [{"label": "A", "text": item.outputs[first]}, {"label": "B", "text": item.outputs[second]}]


def create_app(store: Store, study: Study, run_name: str):
    """The FastAPI app over one study's store."""
    app = FastAPI(title=f"tunewise human evaluation: {run_name}", docs_url=None, redoc_url=None, openapi_url=None)
    env = _templates()

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(run_name=run_name, study=study, **ctx),
                            status_code=status, headers={"Cache-Control": "no-store"})

    def annotator_or_404(token: str) -> Annotator | HTMLResponse:
        annotator = store.annotator_for_token(token)
        if annotator is None:
            return page("message.html.j2", 404, title="Unknown link",
                        message="This link is not (or no longer) valid. Ask for a new one: "
                                "tunewise human-eval invite RUN NAME prints it.")
        return annotator

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "mode": study.mode}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return page("index.html.j2", annotators=store.annotator_overview(), n_items=len(store.items()))

    @app.get("/a/{token}", response_class=HTMLResponse)
    def annotate(token: str, request: Request) -> HTMLResponse:
        annotator = annotator_or_404(token)
        if isinstance(annotator, HTMLResponse):
            return annotator
        current = store.current(study, annotator)
        progress = store.progress(study, annotator)
        notice = {"saved": "Saved.", "dup": "That item was already rated: the first rating stands."}
        flash = next((text for key, text in notice.items() if key in request.query_params), None)
        error = request.query_params.get("error")
        if current is None:
            return page("done.html.j2", annotator=annotator, progress=progress, flash=flash)
        item, side = current
        return page("annotate.html.j2", annotator=annotator, progress=progress, item=item, token=token,
                    outputs=_shown_outputs(study, item, side), flash=flash, error=error, opened_at=time.time())

    @app.post("/a/{token}")
    async def rate(token: str, request: Request):  # noqa: ANN202
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True).items()}
        annotator = await run_in_threadpool(annotator_or_404, token)
        if isinstance(annotator, HTMLResponse):
            return annotator
        try:
            recorded = await run_in_threadpool(_submit, store, study, annotator, form)
        except HumanEvalError as exc:
            return RedirectResponse(f"/a/{token}?{urlencode({'error': str(exc)})}", status_code=303)
        return RedirectResponse(f"/a/{token}?{'saved' if recorded else 'dup'}=1", status_code=303)

    @app.get("/api/a/{token}")
    def state(token: str) -> JSONResponse:
        """The annotator's progress (for scripts and tests; no item text, so nothing here unblinds)."""
        annotator = store.annotator_for_token(token)
        if annotator is None:
            return JSONResponse({"error": "unknown link"}, status_code=404)
        progress = store.progress(study, annotator)
        return JSONResponse({"annotator": annotator.name, "done": progress.done, "total": progress.total})

    return app


def _submit(store: Store, study: Study, annotator: Annotator, form: dict[str, str]) -> bool:
    item_id = form.get("item_id", "")
    opened = form.get("opened_at")
    try:
        seconds = round(max(0.0, time.time() - float(opened)), 1) if opened else None
    except ValueError:
        seconds = None
    comment = form.get("comment", "")
    if study.mode == "pairwise":
        return store.submit(study, annotator, item_id, choice=form.get("choice"), comment=comment, seconds=seconds)
    scores: dict[str, int] = {}
    for criterion in study.criteria:
        value = form.get(f"score_{criterion}", "")
        if value.isdigit():
            scores[criterion] = int(value)
    return store.submit(study, annotator, item_id, scores=scores, comment=comment, seconds=seconds)


def serve(store: Store, study: Study, run_name: str, *, host: str, port: int,
          echo: Callable[[str], None] = print) -> None:
    """Serve the page until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(store, study, run_name)
    echo(f"human-eval: serving {run_name} at http://{host}:{port}/ (Ctrl-C stops; every rating is saved as it is "
         f"made, in {store.path})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
