"""What one server needs to start: the run, the resolved `serve:` settings, the upstream (gateway mode), the log.

`resolve_settings` is where the command line meets the run: it verifies the run (a run whose files no longer match
manifest.json is refused), applies `serve.key=value` overrides to the run's `serve:` section, and resolves the
prediction log's URL. The result travels to uvicorn's worker processes as JSON (TUNEWISE_SERVE_SETTINGS).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tunewise.artifacts.prediction_log import DEFAULT_LOG_PATH, sqlite_url
from tunewise.errors import RecipeError, TunewiseError
from tunewise.recipe import ServeConfig

SETTINGS_ENV = "TUNEWISE_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    config: ServeConfig
    log_url: str
    run_dir: Path | None = None       # None only in gateway mode
    upstream: str | None = None       # gateway mode: an OpenAI-compatible server's base URL
    keys_file: Path | None = None     # None: tunewise.serve.keys.keys_file()
    api_keys: str | None = None       # None: TUNEWISE_API_KEYS from the environment

    def to_json(self) -> str:
        return json.dumps({"config": self.config.model_dump(mode="json"), "log_url": self.log_url,
                           "run_dir": str(self.run_dir) if self.run_dir else None, "upstream": self.upstream,
                           "keys_file": str(self.keys_file) if self.keys_file else None,
                           "api_keys": self.api_keys})

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        doc = json.loads(text)
        return cls(config=ServeConfig.model_validate(doc["config"]), log_url=doc["log_url"],
                   run_dir=Path(doc["run_dir"]) if doc["run_dir"] else None, upstream=doc["upstream"],
                   keys_file=Path(doc["keys_file"]) if doc["keys_file"] else None, api_keys=doc["api_keys"])

    @classmethod
    def from_env(cls) -> "ServeSettings":
        if SETTINGS_ENV not in os.environ:
            raise TunewiseError(f"{SETTINGS_ENV} is not set; start the server with `tunewise serve RUN`")
        return cls.from_json(os.environ[SETTINGS_ENV])


def serve_config(base: dict, overrides: list[str], source: str) -> ServeConfig:
    """The `serve:` section `base` with `serve.key=value` overrides applied, validated (every problem at once)."""
    from pydantic import ValidationError

    from tunewise.recipe import apply_overrides

    bad = [o for o in overrides if not o.lstrip("~").startswith("serve.")]
    if bad:
        raise RecipeError(f"`tunewise serve` takes only serve.* overrides (the model is the run's); got: "
                          f"{', '.join(bad)}")
    raw, origin = apply_overrides({"serve": base}, overrides)
    try:
        config = ServeConfig.model_validate(raw["serve"])
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            dotted = "serve." + ".".join(str(p) for p in err["loc"])
            where = next((f"override `{origin[k]}`" for k in origin if dotted.startswith(k)), source)
            lines.append(f"  - `{dotted}`: {err['msg'].removeprefix('Value error, ')} (from {where})")
        raise RecipeError("invalid serve settings:\n" + "\n".join(lines)) from None
    if config.guard.run is not None:
        config.guard.run = str(Path(config.guard.run).expanduser().resolve())
    return config


def resolve_settings(run_dir: Path | None, overrides: list[str] | None = None, *, upstream: str | None = None,
                     log_url: str | None = None, verify: bool = True) -> ServeSettings:
    """Settings for `tunewise serve RUN [serve.key=value ...]` (or `--upstream URL` without a run)."""
    overrides = list(overrides or [])
    if run_dir is None:
        if upstream is None:
            raise TunewiseError("`tunewise serve` needs a run directory, or --upstream URL for gateway mode")
        config = serve_config({}, overrides, "the defaults")
        url = log_url or config.log
        if url is None:
            raise TunewiseError("gateway mode has no run directory for the prediction log; give --log URL (e.g. "
                                "sqlite:///gateway-log.sqlite) or serve.log=URL")
        return ServeSettings(config=config, log_url=url, upstream=upstream)

    from tunewise.rundir import RunDir, verify_run

    if verify:
        verify_run(run_dir)  # VerifyError (exit 1) names every file that no longer matches
    rd = RunDir.open(run_dir)
    config = serve_config(rd.recipe.serve.model_dump(mode="json"), overrides, str(rd.root / "recipe.yaml"))
    url = log_url or config.log or sqlite_url((rd.root / DEFAULT_LOG_PATH).resolve())
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return ServeSettings(config=config, log_url=url, run_dir=rd.root.resolve(), upstream=upstream)
