"""A continuous-batching decoding engine for a run's causal LM: concurrent requests share every decoding step.

One scheduler thread owns the model. Each turn of its loop it
  1. admits waiting requests into the running batch (up to `max_batch_size` rows): their prompts are prefilled
     together, left-padded, and their KV cache is merged into the running batch's cache;
  2. decodes ONE token for every running row in a single forward pass (per-row positions and a 2D padding mask,
     so rows of different lengths share the step);
  3. streams each row's new text to its request's asyncio queue (held back while it could still be the start of a
     stop string, or is half a UTF-8 character);
  4. retires rows that hit EOS, a stop string, max_tokens, the context limit, or whose client went away; their KV
     rows are dropped and the all-padding columns on the left are trimmed.

Rows are right-aligned in the cache (left padding), so every row writes its next key/value into the same column and
the KV tensors grow by one column per step, as `generate` does. A new row only costs a left-pad at admission.

Sampling is per row: greedy when temperature is 0, else temperature and nucleus (top_p) sampling with the row's own
generator (seeded when the request gives a seed). Torch releases the GIL inside its kernels, so the event loop stays
responsive while the thread decodes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tunewise.errors import ModelError, TunewiseError

if TYPE_CHECKING:
    import torch

    from tunewise.hardware import Placement

log = logging.getLogger("tunewise.serve.generation")

FinishReason = Literal["stop", "length", "cancelled", "error"]


class GenerationError(TunewiseError):
    """A generation request the engine cannot take (too long for the context, engine stopped, queue full)."""


class PromptTooLong(GenerationError):
    """prompt tokens + max_tokens exceed the model's context."""


class EngineBusy(GenerationError):
    """The engine's waiting queue is full: the caller should answer 503."""


class EngineStopped(GenerationError):
    """The engine has been closed (or its thread died)."""


# ---------------------------------------------------------------- requests and their results


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0          # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise GenerationError("max_tokens must be at least 1")
        if not 0 <= self.temperature <= 2:
            raise GenerationError("temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise GenerationError("top_p must be in (0, 1]")
        if any(not s for s in self.stop):
            raise GenerationError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Delta:
    """A piece of a request's output. The last one has `finish_reason` set (its text may be empty)."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class RequestHandle:
    """What `submit` returns: iterate it for Deltas (`async for d in handle`), or `await handle.result()`.
    `cancel()` (e.g. when the client disconnects) retires the row at the next step."""

    def __init__(self, seq: "_Sequence", loop: asyncio.AbstractEventLoop):
        self._seq = seq
        self._loop = loop
        self.queue: asyncio.Queue[Delta] = asyncio.Queue()
        self.prompt_tokens = len(seq.prompt_ids)

    def _push(self, delta: Delta) -> None:  # called from the engine thread
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, delta)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._seq.cancelled = True

    def cancel(self) -> None:
        self._seq.cancelled = True

    async def __aiter__(self) -> AsyncIterator[Delta]:
        while True:
            delta = await self.queue.get()
            yield delta
            if delta.finish_reason is not None:
                return

    async def result(self) -> Completion:
        parts: list[str] = []
        try:
            async for d in self:
                parts.append(d.text)
                if d.finish_reason is not None:
                    return Completion("".join(parts), d.finish_reason, d.prompt_tokens, d.completion_tokens)
        except BaseException:
            self.cancel()
            raise
        raise EngineStopped("the generation engine stopped before the request finished")


@dataclass(eq=False)
class _Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    handle: RequestHandle | None = None
    generated: list[int] = field(default_factory=list)
    text: str = ""             # decoded output so far
    sent: int = 0              # characters of `text` already streamed
    cancelled: bool = False
    generator: "torch.Generator | None" = None
    finish: FinishReason | None = None


# ---------------------------------------------------------------- the engine


@dataclass
class EngineConfig:
    max_batch_size: int = 16          # rows decoded together in one step
    max_waiting: int = 256            # requests queued beyond the batch; more are refused (503)
    max_context: int | None = None    # prompt + output tokens; None = the model's max_position_embeddings
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048      # the most a request may ask for
    idle_wait_s: float = 0.05         # how long the thread sleeps on an empty queue before checking for shutdown


@dataclass
class EngineStats:
    """What the scheduler did: the batch size of every decoding step (a histogram) and token counts."""

    step_batch_sizes: collections.Counter = field(default_factory=collections.Counter)
    prefills: int = 0
    generated_tokens: int = 0
    finished: int = 0

    @property
    def max_batch(self) -> int:
        return max(self.step_batch_sizes, default=0)

    def as_dict(self) -> dict[str, Any]:
        return {"step_batch_sizes": {str(k): v for k, v in sorted(self.step_batch_sizes.items())},
                "prefills": self.prefills, "generated_tokens": self.generated_tokens, "finished": self.finished}


class GenerationEngine:
    """Continuous batching over one causal LM. `start()` launches the scheduler thread; `submit()` (from a coroutine)
    queues a request and returns its handle; `close()` stops the thread and ends all open requests.

    `on_step(batch_size)` and `on_tokens(n)` are optional hooks (e.g. Prometheus), called from the engine thread."""

    def __init__(self, model, tokenizer, placement: "Placement", config: EngineConfig | None = None, *,
                 model_name: str = "model", on_step: Callable[[int], None] | None = None,
                 on_tokens: Callable[[int], None] | None = None):
        self.model = model
        self.tok = tokenizer
        self.placement = placement
        self.config = config or EngineConfig()
        self.model_name = model_name
        self.on_step = on_step
        self.on_tokens = on_tokens
        self.stats = EngineStats()
        self.eos_ids = _eos_ids(model, tokenizer)
        self.max_context = self.config.max_context or int(getattr(model.config, "max_position_embeddings", 2048))
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failure: BaseException | None = None
        self._seeds = itertools.count(int(time.time_ns() % 2**31))

    # ------------------------------------------------------------ prompts

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """Token ids of `messages` rendered by the model's chat template, ending where the assistant reply starts."""
        if not getattr(self.tok, "chat_template", None):
            raise GenerationError("this model has no chat template; use /v1/completions with a plain prompt")
        try:
            text = self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 errors: a malformed conversation for this template
            raise GenerationError(f"the chat template could not render these messages ({type(exc).__name__})") \
                from None
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def completion_prompt(self, prompt: str) -> list[int]:
        return self.tok(prompt)["input_ids"]

    # ------------------------------------------------------------ requests

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestHandle:
        """Queue a request (call from a coroutine: deltas go to the running event loop)."""
        if self._closed or self._failure is not None:
            raise EngineStopped("the generation engine is not running")
        if not prompt_ids:
            raise GenerationError("the prompt is empty")
        if params.max_tokens > self.config.max_tokens_limit:
            raise GenerationError(f"max_tokens={params.max_tokens} is over this server's limit of "
                                  f"{self.config.max_tokens_limit}")
        if len(prompt_ids) + params.max_tokens > self.max_context:
            raise PromptTooLong(f"the prompt has {len(prompt_ids)} tokens; with max_tokens={params.max_tokens} "
                                f"that is over the model's context of {self.max_context} tokens")
        seq = _Sequence(list(prompt_ids), params)
        seq.handle = RequestHandle(seq, asyncio.get_running_loop())
        with self._wake:
            if len(self._waiting) >= self.config.max_waiting:
                raise EngineBusy(f"{len(self._waiting)} generation requests are already waiting")
            self._waiting.append(seq)
            self._wake.notify()
        return seq.handle

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # ------------------------------------------------------------ the thread

    def start(self) -> "GenerationEngine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tunewise-generation", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._failure is None

    def _loop(self) -> None:
        batch = _Batch(self)
        try:
            while True:
                with self._wake:
                    while not self._waiting and not batch.rows and not self._closed:
                        self._wake.wait(self.config.idle_wait_s)
                    if self._closed:
                        break
                    room = self.config.max_batch_size - len(batch.rows)
                    admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                admitted = [s for s in admitted if not _end_if_cancelled(s)]
                if admitted:
                    batch.admit(admitted)
                if batch.rows:
                    batch.step()
        except BaseException as exc:  # noqa: BLE001 - a dead engine must end every open request, not hang them
            self._failure = exc
            log.exception("the generation engine failed")
            reason: FinishReason = "error"
        else:
            reason = "cancelled"
        for seq in [*batch.rows, *self._waiting]:
            seq.finish = seq.finish or reason
            _emit_final(seq)
        self._waiting.clear()


def _end_if_cancelled(seq: _Sequence) -> bool:
    if seq.cancelled:
        seq.finish = "cancelled"
        _emit_final(seq)
    return seq.cancelled


def _emit_final(seq: _Sequence, text: str = "") -> None:
    if seq.handle is not None:
        seq.handle._push(Delta(text, seq.finish, len(seq.prompt_ids), len(seq.generated)))


def _eos_ids(model, tok) -> set[int]:
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen) if isinstance(gen, (list, tuple)) else ({gen} if gen is not None else set())
    if not ids:
        raise ModelError("the model has no end-of-sequence token, so generation could not stop")
    return ids


class _Batch:
    """The running rows, their shared KV cache (rows right-aligned), and the padding mask."""

    def __init__(self, engine: GenerationEngine):
        self.engine = engine
        self.rows: list[_Sequence] = []
        self.cache = None            # transformers DynamicCache over len(rows) rows
        self.mask = None             # [rows, cache_len] long: 1 where a row has a real token
        self.next_ids: list[int] = []  # each row's last sampled token, not yet in the cache

    # ------------------------------------------------------------ admission

    def admit(self, seqs: list[_Sequence]) -> None:
        import torch
        from transformers import DynamicCache

        eng = self.engine
        device = eng.placement.device
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), eng.tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):  # left padding: every prompt ends in the last column
            ids[r, width - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
            mask[r, width - len(s.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=eng.model.config)
        with torch.inference_mode():
            out = eng.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), cache=cache, use_cache=True,
                            logits_to_keep=1)
        eng.stats.prefills += 1
        for s in seqs:
            if not s.params.greedy:
                s.generator = torch.Generator(device="cpu")
                s.generator.manual_seed(s.params.seed if s.params.seed is not None else next(eng._seeds))
        first = _sample(out.logits[:, -1, :], seqs)
        self._merge(cache, mask, seqs)
        self.next_ids += first
        self._after_tokens(list(range(len(self.rows) - len(seqs), len(self.rows))))

    def _merge(self, cache, mask, seqs: list[_Sequence]) -> None:
        import torch

        if not self.rows:
            self.cache, self.mask, self.rows = cache, mask, list(seqs)
            return
        old_len, new_len = self.mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self.cache.layers, cache.layers):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)], 0)
            old_layer.values = torch.cat([_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)], 0)
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)], 0)
        self.rows += seqs

    # ------------------------------------------------------------ one decoding step

    def step(self) -> None:
        import torch

        eng = self.engine
        device = eng.placement.device
        n = len(self.rows)
        self.mask = torch.cat([self.mask, torch.ones((n, 1), dtype=torch.long)], 1)
        ids = torch.tensor(self.next_ids, dtype=torch.long).view(n, 1)
        positions = (self.mask.sum(-1, keepdim=True) - 1)
        with torch.inference_mode():
            out = eng.model(input_ids=ids.to(device), attention_mask=self.mask.to(device),
                            position_ids=positions.to(device), cache=self.cache, use_cache=True)
        eng.stats.step_batch_sizes[n] += 1
        if eng.on_step is not None:
            eng.on_step(n)
        self.next_ids = _sample(out.logits[:, -1, :], self.rows)
        self._after_tokens(list(range(n)))

    # ------------------------------------------------------------ streaming and retirement

    def _after_tokens(self, indices: list[int]) -> None:
        """Record each row's new token (next_ids[i]), stream its text, and retire the rows that are done."""
        eng = self.engine
        done: list[int] = []
        outgoing: list[tuple[_Sequence, str]] = []
        new_tokens = 0
        for i in indices:
            seq, token = self.rows[i], self.next_ids[i]
            if seq.cancelled:
                seq.finish = "cancelled"
            elif token in eng.eos_ids:
                seq.finish = "stop"
            else:
                seq.generated.append(token)
                new_tokens += 1
                if len(seq.generated) >= seq.params.max_tokens or \
                        len(seq.prompt_ids) + len(seq.generated) >= eng.max_context:
                    seq.finish = "length"
            text = _stream(eng.tok, seq)
            if seq.finish is not None:
                done.append(i)
            if text or seq.finish is not None:
                outgoing.append((seq, text))
        # the stats first, so that a client that has its answer also sees them
        eng.stats.generated_tokens += new_tokens
        eng.stats.finished += len(done)
        if new_tokens and eng.on_tokens is not None:
            eng.on_tokens(new_tokens)
        for seq, text in outgoing:
            if seq.finish is not None:
                _emit_final(seq, text)
            elif seq.handle is not None:
                seq.handle._push(Delta(text))
        if done:
            self._retire(done)

    def _retire(self, done: list[int]) -> None:
        import torch

        gone = set(done)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        if not keep:
            self.rows, self.next_ids, self.cache, self.mask = [], [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self.mask[index]
        first = int((mask.sum(0) > 0).nonzero()[0])  # columns left of it are padding in every remaining row
        self.mask = mask[:, first:]
        dev_index = index.to(self.engine.placement.device)
        for layer in self.cache.layers:
            layer.keys = layer.keys[dev_index, :, first:]
            layer.values = layer.values[dev_index, :, first:]
        self.rows = [self.rows[i] for i in keep]
        self.next_ids = [self.next_ids[i] for i in keep]


def _left_pad(t: "torch.Tensor", width: int, dim: int = 2) -> "torch.Tensor":
    import torch

    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim)


def _stream(tok, seq: _Sequence) -> str:
    """The text to send now: new decoded text, cut at a stop string, holding back a possible stop-string start
    or an incomplete UTF-8 character while the row goes on."""
    text = tok.decode(seq.generated, skip_special_tokens=True)
    stops = seq.params.stop
    if stops:
        search_from = max(0, seq.sent - max(len(s) for s in stops) + 1)
        hits = [i for i in (text.find(s, search_from) for s in stops) if i >= 0]
        if hits:
            text = text[:min(hits)]
            seq.finish = "stop"
    if seq.finish is None:
        if text.endswith("\ufffd"):
            return ""
        hold = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        text = text[:len(text) - hold]
    seq.text = text
    new = text[seq.sent:] if len(text) > seq.sent else ""
    seq.sent = max(seq.sent, len(text))
    return new


def _sample(logits: "torch.Tensor", rows: Sequence[_Sequence]) -> list[int]:
    """One token per row: argmax for greedy rows; temperature + nucleus sampling with the row's generator else."""
    import torch

    logits = logits.float().cpu()
    out = logits.argmax(-1).tolist()
    for r, seq in enumerate(rows):
        p = seq.params
        if p.greedy:
            continue
        probs = torch.softmax(logits[r] / p.temperature, -1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p  # the smallest set whose mass reaches top_p
            sorted_probs = sorted_probs * keep
            out[r] = int(order[torch.multinomial(sorted_probs, 1, generator=seq.generator)])
        else:
            out[r] = int(torch.multinomial(probs, 1, generator=seq.generator))
    return out


# ---------------------------------------------------------------- loading a run's model


@dataclass(frozen=True)
class LoadedLM:
    model: Any
    tokenizer: Any
    placement: "Placement"
    source: Path
    how: str


def load_run_lm(run_dir: Path, *, device: str = "auto", precision: str = "auto") -> LoadedLM:
    """The run's causal LM for serving: export/ (the merged standalone folder) when it holds full weights, else
    model/ through the Task protocol (LoRA merged in memory). bf16 only where tunewise.hardware says it pays."""
    from tunewise.hardware import choose_placement
    from tunewise.models import resolve_base_model
    from tunewise.recipe import load_recipe
    from tunewise.tasks import task_for
    from tunewise.tasks.causal import for_inference, load_finetuned

    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml")
    task = task_for(recipe)
    if task.family != "causal_lm":
        raise ModelError(f"{run_dir}: the run's task is {recipe.task!r}, not a causal LM; chat and completions "
                         f"need a generation or chat run")
    placement = choose_placement(device, precision)
    export = run_dir / "export"
    if (export / "config.json").is_file() and any(export.glob("*.safetensors")):
        model = for_inference(task.load_model(export), placement)
        tok = task.load_tokenizer(export)
        return LoadedLM(model, tok, placement, export, "export/ (standalone weights)")
    model_dir = run_dir / "model"
    if not model_dir.is_dir():
        raise ModelError(f"{run_dir}: neither export/ nor model/ holds a trained model; run `tunewise run` first")
    base = resolve_base_model(recipe.model.base)
    model = load_finetuned(model_dir, base.path, placement)
    tok = task.load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base.path)
    return LoadedLM(model, tok, placement, model_dir, "model/ (adapter merged in memory)")


def engine_for_run(run_dir: Path, config: EngineConfig | None = None, *, model_name: str | None = None,
                   device: str = "auto", precision: str = "auto", **hooks) -> GenerationEngine:
    """Load the run's LM and start an engine over it."""
    lm = load_run_lm(run_dir, device=device, precision=precision)
    log.info("generation: %s from %s on %s/%s (%s)", model_name, lm.source, lm.placement.device,
             lm.placement.precision, lm.placement.reason)
    return GenerationEngine(lm.model, lm.tokenizer, lm.placement, config,
                            model_name=model_name or Path(run_dir).name, **hooks).start()
