"""Causal-LM tasks (generation, chat): render examples, build loss masks, pack, collate, load models.

Loss masks are built from character spans, not from template markers: the chat template is rendered up to each
assistant turn with and without that turn, and the characters in between (the reply and the template's end-of-turn
text) are the trained span. This works for any template that renders conversations as a growing prefix, including
SmolLM2's, which has no `{% generation %}` markers. Tokens are then marked trained when their offsets fall in a span.
EOS always closes a trained span (appended when the template does not end turns with it), so the model learns to stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunewise.artifacts.rows import Example
from tunewise.errors import ModelError

if TYPE_CHECKING:
    from tunewise.hardware import Placement
    from tunewise.recipe import Recipe

IGNORE = -100


class TemplateError(ValueError):
    """The chat template cannot be rendered for an example, or does not render conversations as a growing prefix."""


class TooLong(ValueError):
    """An example does not fit max_length and the recipe says reject."""


# ---------------------------------------------------------------- tokenizer and model


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    from tunewise.models import separate_pad_from_eos

    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{path}: the tokenizer is not a fast (Rust) tokenizer; loss masks need its offsets")
    if tok.eos_token_id is None:
        raise ModelError(f"{path}: the tokenizer has no EOS token, so the model could not learn to stop")
    separate_pad_from_eos(tok)
    return tok


def load_causal_lm(path: Path, *, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    except ValueError as exc:
        raise ModelError(f"{path}: not a causal language model ({exc})") from None
    return model


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


# ---------------------------------------------------------------- rendering and masks


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]          # trained character spans [start, end)
    prompt_end: int                       # end of the last prompt message's content: truncation cuts before it


def render(tok, example: Example, *, task: str) -> Rendered:
    """The example as one string with the character spans that carry loss."""
    messages = example.messages
    if not has_chat_template(tok):
        if task == "chat":
            raise TemplateError("the base model has no chat template; chat data needs one (use a chat model, or "
                                "task: generation with data.prompt_template)")
        prompt = "\n\n".join(m["content"] for m in messages if m["role"] != "assistant")
        completion = example.target
        sep = "" if prompt.endswith((" ", "\n")) else "\n"
        text = prompt + sep + completion + tok.eos_token
        return Rendered(text, [(len(prompt) + len(sep), len(text))], len(prompt))
    spans: list[tuple[int, int]] = []
    full = _apply(tok, messages, add_generation_prompt=False)
    prompt_end = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _apply(tok, messages[:i], add_generation_prompt=True) if i else ""
        upto = _apply(tok, messages[: i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TemplateError("the chat template does not render the conversation as a growing prefix, so the "
                                "assistant turns cannot be located; loss masks need that property")
        start = len(before)
        reply = upto[start:]
        content_at = reply.find(m["content"])
        if content_at < 0:
            raise TemplateError(f"the chat template changed the text of assistant message {i}")
        end_of_content = start + content_at + len(m["content"])
        eos_at = upto.find(tok.eos_token, end_of_content)
        end = eos_at + len(tok.eos_token) if eos_at >= 0 and not upto[end_of_content:eos_at].strip() else end_of_content
        if m.get("weight", 1) != 0:
            spans.append((start, end))
        if i == max(j for j, x in enumerate(messages) if x["role"] == "assistant"):
            last_prompt = next((x for x in reversed(messages[:i]) if x["role"] != "assistant"), None)
            prompt_end = before.rfind(last_prompt["content"]) + len(last_prompt["content"]) if last_prompt else 0
    text = full
    # a template that does not close turns with EOS: insert it after each trained reply (from the end, so that
    # earlier offsets stay valid)
    for k in range(len(spans) - 1, -1, -1):
        s, e = spans[k]
        if not text[s:e].endswith(tok.eos_token):
            text = text[:e] + tok.eos_token + text[e:]
            spans = [(a + len(tok.eos_token), b + len(tok.eos_token)) if a >= e else (a, b) for a, b in spans]
            spans[k] = (s, e + len(tok.eos_token))
            if prompt_end >= e:
                prompt_end += len(tok.eos_token)
    return Rendered(text, spans, prompt_end)


def _apply(tok, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        return tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja2 raises TemplateError / UndefinedError / its own exceptions
        raise TemplateError(f"the chat template failed ({type(exc).__name__}: {exc})") from None


def prompt_text(tok, example: Example) -> str:
    """What the model sees at generation time: the rendered prompt, ending where the reply starts."""
    prompt = example.prompt_messages
    if has_chat_template(tok):
        return _apply(tok, prompt, add_generation_prompt=True)
    text = "\n\n".join(m["content"] for m in prompt)
    return text if text.endswith((" ", "\n")) else text + "\n"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: int = 0   # prompt tokens cut to fit max_length
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode(tok, example: Example, *, task: str, max_length: int, truncation: str = "truncate") -> Encoded:
    """Token ids and labels (IGNORE outside trained spans). Over max_length: cut the end of the last prompt
    message (keeping the template around it and the whole reply) or raise TooLong, per `truncation`."""
    r = render(tok, example, task=task)
    enc = tok(r.text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = enc["input_ids"]
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    trained = _starts_in_spans([a for a, _ in offsets], r.spans)
    labels = [t if m else IGNORE for t, m in zip(ids, trained)]
    if labels:
        labels[0] = IGNORE  # nothing precedes it (also keeps packed sequences from predicting across a boundary)
    cut = 0
    if len(ids) > max_length:
        over = len(ids) - max_length
        if truncation == "reject":
            raise TooLong(f"is {len(ids)} tokens, over model.max_length={max_length} by {over} "
                          f"(set model.truncation=truncate to cut the prompt instead)")
        # cut `over` prompt tokens that end at the last prompt message's content
        end = next((i for i, (a, _) in enumerate(offsets) if a >= r.prompt_end), len(ids))
        first_trained = next((i for i, lab in enumerate(labels) if lab != IGNORE), len(ids))
        end = min(end, first_trained)
        start = end - over
        if start < 1:
            raise TooLong(f"is {len(ids)} tokens and its reply alone leaves no room for the prompt within "
                          f"model.max_length={max_length}; raise max_length or shorten the reply")
        ids = ids[:start] + ids[end:]
        labels = labels[:start] + labels[end:]
        cut = over
    return Encoded(ids, labels, cut)


def _starts_in_spans(starts: list[int], spans: list[tuple[int, int]]) -> list[bool]:
    """For each token start offset, whether it lies in one of the [start, end) character spans. Token offsets
    ascend, so each span is one run of tokens found by binary search (a test against every span for every token
    was a quarter of encoding time on long dialogues)."""
    import numpy as np

    at = np.asarray(starts, dtype=np.int64)
    if at.size > 1 and bool((at[1:] < at[:-1]).any()):  # a tokenizer whose offsets do not ascend
        return [any(s <= a < e for s, e in spans) for a in starts]
    inside = np.zeros(at.size, dtype=bool)
    for s, e in spans:
        inside[np.searchsorted(at, s, "left"):np.searchsorted(at, e, "left")] = True
    return inside.tolist()


def encode_all(tok, examples: list[Example], *, task: str, max_length: int, truncation: str,
               split: str) -> tuple[list[Encoded], list[dict[str, Any]]]:
    """Encode every example; those that cannot be encoded are returned as quarantine records (never dropped)."""
    encoded: list[Encoded] = []
    rejected: list[dict[str, Any]] = []
    for ex in examples:
        try:
            e = encode(tok, ex, task=task, max_length=max_length, truncation=truncation)
        except (TooLong, TemplateError) as exc:
            rejected.append({"id": ex.id, "origin": ex.origin, "split": split,
                             "check": "too_long" if isinstance(exc, TooLong) else "template",
                             "reason": f"{ex.origin}: example {ex.id} {exc}" if isinstance(exc, TooLong)
                             else f"{ex.origin}: {exc}"})
            continue
        if e.trained_tokens == 0:
            rejected.append({"id": ex.id, "origin": ex.origin, "split": split, "check": "no_trained_tokens",
                             "reason": f"{ex.origin}: no token of the reply survived tokenization"})
            continue
        e.meta = {"id": ex.id}
        encoded.append(e)
    return encoded, rejected


def encode_examples_dataset(tok, examples, *, task: str, max_length: int, truncation: str, split: str,
                            cache_file: Path) -> EncodedSplit:
    """`encode_all` for a memory-mapped records table (artifacts.rows.records_dataset, kind "example"): encoded a
    batch at a time into the Arrow file `cache_file` (columns input_ids, labels, length, truncated,
    trained_tokens, id), so a split larger than memory stays on disk. The same examples are encoded, in the same
    order, and the same ones quarantined with the same records, as `encode_all` over the whole list."""
    import json

    from tunewise.artifacts.rows import example_from_record

    def encode_batch(batch):
        out: dict[str, list] = {"input_ids": [], "labels": [], "length": [], "truncated": [], "trained_tokens": [],
                                "id": [], "rejected": []}
        for record in batch["record"]:
            ex = example_from_record(record)
            encoded, rejected = encode_all(tok, [ex], task=task, max_length=max_length, truncation=truncation,
                                           split=split)
            e = encoded[0] if encoded else Encoded([], [])
            out["input_ids"].append(e.input_ids)
            out["labels"].append(e.labels)
            out["length"].append(len(e.input_ids))
            out["truncated"].append(e.truncated)
            out["trained_tokens"].append(e.trained_tokens)
            out["id"].append(ex.id)
            out["rejected"].append(json.dumps(rejected[0], ensure_ascii=False) if rejected else None)
        return out

    if len(examples) == 0:
        from datasets import Dataset

        empty = Dataset.from_dict({k: [] for k in ("input_ids", "labels", "length", "truncated", "trained_tokens",
                                                   "id")})
        return EncodedSplit(empty, [], 0)
    every = _arrow_map(examples, encode_batch, cache_file.with_name(cache_file.stem + ".all.arrow"))
    rejected = [json.loads(r) for batch in every.select_columns(["rejected"]).iter(batch_size=10_000)
                for r in batch["rejected"] if r is not None]
    kept = every.remove_columns("rejected")
    if rejected:  # a plain table of the encoded examples only (no index mapping over the rejected ones)
        def accepted(batch):
            keep = [i for i, r in enumerate(batch["rejected"]) if r is None]
            return {k: [batch[k][i] for i in keep] for k in kept.column_names}

        kept = _arrow_map(every, accepted, cache_file)
    return EncodedSplit(kept, rejected, len(examples))


@dataclass
class EncodedSplit:
    """A split encoded into Arrow (see encode_examples_dataset): the encoded examples, the quarantine records of
    those that could not be encoded, and how many examples the split had."""

    dataset: Any
    rejected: list[dict[str, Any]]
    examples: int

    def totals(self) -> dict[str, int]:
        """examples, tokens, trained_tokens, truncated_examples, truncated_tokens: summed a batch at a time."""
        sums = {"examples": len(self.dataset), "tokens": 0, "trained_tokens": 0, "truncated_examples": 0,
                "truncated_tokens": 0}
        columns = ["length", "trained_tokens", "truncated"]
        for batch in self.dataset.select_columns(columns).iter(batch_size=10_000):
            sums["tokens"] += sum(batch["length"])
            sums["trained_tokens"] += sum(batch["trained_tokens"])
            sums["truncated_examples"] += sum(1 for t in batch["truncated"] if t)
            sums["truncated_tokens"] += sum(batch["truncated"])
        return sums

    def head(self, n: int) -> list[Encoded]:
        """The first n encoded examples as Encoded (for mask previews)."""
        rows = self.dataset.select(range(min(n, len(self.dataset))))
        return [Encoded(r["input_ids"], r["labels"], r["truncated"], {"id": r["id"]}) for r in rows]

    def features(self):
        """The columns the Trainer and the collator read (input_ids, labels, length): a view, nothing copied."""
        return self.dataset.select_columns(["input_ids", "labels", "length"])


def _arrow_map(dataset, fn, cache_file: Path, batch_size: int = 256):
    """dataset.map(fn, batched) into the Arrow file `cache_file` (rewritten, never read from an old cache)."""
    import datasets

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return dataset.map(fn, batched=True, batch_size=batch_size, remove_columns=dataset.column_names,
                           cache_file_name=str(cache_file), load_from_cache_file=False)
    finally:
        if shown:
            datasets.enable_progress_bars()


MASK_MARKS = {"ansi": ("\x1b[1;32m", "\x1b[0m"), "plain": ("[[", "]]")}  # around trained tokens


def show_mask(tok, e: Encoded, *, style: str = "ansi") -> str:
    """An encoded example's tokens with the trained ones marked: ANSI colours for terminals, [[...]] for plain text.
    The runs are the report's (`mask_segments`), so terminal and report always agree."""
    on, off = MASK_MARKS[style]
    return "".join(f"{on}{text}{off}" if trained else text for text, trained in mask_segments(tok, e))


def mask_segments(tok, e: Encoded) -> list[list]:
    """[[text, trained], ...] runs of an encoded example, for the report's loss-mask preview."""
    segments: list[list] = []
    for tid, lab in zip(e.input_ids, e.labels):
        trained = lab != IGNORE
        piece = tok.decode([tid])
        if segments and segments[-1][1] == trained:
            segments[-1][0] += piece
        else:
            segments.append([piece, trained])
    return segments


# ---------------------------------------------------------------- packing and collation


def pack(encoded: list[Encoded], max_length: int) -> list[dict[str, list[int]]]:
    """First-fit-decreasing packing into rows of at most max_length tokens. Each row keeps its sequence lengths,
    so that positions restart and attention stays inside each sequence (see `block_causal_mask`)."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
    rows: list[dict[str, list[int]]] = []
    free: list[int] = []
    for i in order:
        n = len(encoded[i].input_ids)
        slot = next((r for r, room in enumerate(free) if room >= n), None)
        if slot is None:
            rows.append({"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []})
            free.append(max_length)
            slot = len(rows) - 1
        row = rows[slot]
        row["input_ids"] += encoded[i].input_ids
        row["labels"] += encoded[i].labels
        row["position_ids"] += list(range(n))
        row["seq_lens"].append(n)
        free[slot] -= n
    return rows


def pack_plan(lengths, max_length: int):
    """`pack`'s first-fit-decreasing assignment from the sequence lengths alone: (members, offsets), where row r
    holds examples members[offsets[r]:offsets[r + 1]] in the order `pack` appends them. The same rows as `pack`,
    found with a max-segment tree over the rows' free room (log time per example instead of a scan of every
    row), in a few bytes per example."""
    import array

    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    order = np.argsort(-lengths, kind="stable")  # `sorted` by -length is stable too
    size = 1
    while size < max(n, 1):
        size *= 2
    room = array.array("q", [max_length]) * (2 * size)  # most free room under each node; unused rows are empty
    slot_of = np.empty(n, dtype=np.int64)
    used = 0
    for k, i in enumerate(order.tolist()):
        need = int(lengths[i])
        if room[1] >= need:  # the first row with room: go left whenever the left subtree has it
            node = 1
            while node < size:
                node = 2 * node if room[2 * node] >= need else 2 * node + 1
            slot = node - size
        else:  # longer than max_length: a new row of its own, as `pack` does
            slot = used
        used = max(used, slot + 1)
        node = slot + size
        room[node] -= need
        node //= 2
        while node:
            room[node] = max(room[2 * node], room[2 * node + 1])
            node //= 2
        slot_of[k] = slot
    members = order[np.argsort(slot_of, kind="stable")]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(slot_of, minlength=used))]).astype(np.int64)
    return members, offsets


def pack_dataset(encoded, max_length: int, cache_file: Path, *, rows_per_batch: int = 256):
    """`pack` for an encoded Arrow dataset (input_ids, labels, length): the packed rows (input_ids, labels,
    position_ids, seq_lens, length) written a batch of rows at a time into the Arrow file `cache_file`. Only the
    lengths and the plan are held in memory; the token ids are read from the memory-mapped table as each row
    is built."""
    import numpy as np
    from datasets import Dataset

    lengths = np.asarray(encoded.data.column("length").to_numpy(), dtype=np.int64)
    members, offsets = pack_plan(lengths, max_length)

    def build(batch):
        out: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": [], "length": []}
        spans = [(int(offsets[r]), int(offsets[r + 1])) for r in batch["row"]]
        wanted = np.concatenate([members[a:b] for a, b in spans]).tolist()
        got = encoded.select_columns(["input_ids", "labels"])[wanted]
        at = 0
        for a, b in spans:
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            seq_lens: list[int] = []
            for j in range(at, at + b - a):
                ids += got["input_ids"][j]
                labels += got["labels"][j]
                positions += range(len(got["input_ids"][j]))
                seq_lens.append(len(got["input_ids"][j]))
            at += b - a
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["position_ids"].append(positions)
            out["seq_lens"].append(seq_lens)
            out["length"].append(len(ids))
        return out

    rows = Dataset.from_dict({"row": np.arange(len(offsets) - 1, dtype=np.int64)})
    return _arrow_map(rows, build, cache_file, batch_size=rows_per_batch)


def block_causal_mask(seq_lens: list[list[int]], length: int) -> torch.Tensor:
    """Bool [batch, 1, L, L], True where attention is allowed: causal within each packed sequence, never across,
    and nothing to or from padding. (position_ids alone do not isolate sequences with sdpa/eager on CPU.)"""
    mask = torch.zeros(len(seq_lens), 1, length, length, dtype=torch.bool)
    for b, lens in enumerate(seq_lens):
        start = 0
        for n in lens:
            mask[b, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n
        # padding rows attend to themselves only, so softmax never sees an all-masked row
        for p in range(start, length):
            mask[b, 0, p, p] = True
    return mask


@dataclass
class CausalCollator:
    """Right-pads a batch. Packed rows (with seq_lens) get position_ids and a 4D block-causal mask.

    Unpacked rows get no attention mask at all: with right padding every real token precedes every pad, so causal
    attention alone already keeps real tokens from seeing pads (pads carry no loss). Without a mask, sdpa takes its
    fused causal kernel instead of materialising a [batch, heads, L, L] score tensor: less memory and time, same
    logits. `padding_mask=True` restores the usual 2D mask (for evaluation code that wants it).
    """

    pad_id: int
    padding_mask: bool = False

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
        batch = {"input_ids": ids, "labels": labels}
        if "seq_lens" in features[0]:
            positions = torch.zeros((len(features), length), dtype=torch.long)
            for i, f in enumerate(features):
                positions[i, :len(f["position_ids"])] = torch.tensor(f["position_ids"])
            batch["position_ids"] = positions
            batch["attention_mask"] = block_causal_mask([f["seq_lens"] for f in features], length)
        elif self.padding_mask:
            attention = torch.zeros((len(features), length), dtype=torch.long)
            for i, f in enumerate(features):
                attention[i, :len(f["input_ids"])] = 1
            batch["attention_mask"] = attention
        return batch


def as_features(encoded: list[Encoded]) -> list[dict[str, list[int]]]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded]


# ---------------------------------------------------------------- inference


def load_finetuned(model_dir: Path, base_path: Path, placement: Placement):
    """The fine-tuned model as one plain module: LoRA adapters are merged in memory (faster generation)."""
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(base_path)
        model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    else:
        model = load_causal_lm(model_dir)
    return for_inference(model, placement)


def for_inference(model, placement: Placement):
    model.eval()
    if placement.precision == "bf16":
        model = model.to(torch.bfloat16)
    return model.to(placement.device)


def prompt_ids(tok, example: Example, max_prompt: int) -> list[int]:
    """Token ids of the generation prompt; when too long, the end of the last prompt message is cut (as in
    training), so the instruction at the start and the template's reply header survive."""
    text = prompt_text(tok, example)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    if len(ids) <= max_prompt:
        return ids
    last = next(m["content"] for m in reversed(example.prompt_messages))
    end_char = text.rfind(last) + len(last)
    end = next((i for i, (a, _) in enumerate(enc["offset_mapping"]) if a >= end_char), len(ids))
    over = len(ids) - max_prompt
    start = max(end - over, 1)
    ids = ids[:start] + ids[end:]
    return ids[-max_prompt:]


def cut_at_eos(sequences: list[list[int]], eos_token_id: int) -> list[list[int]]:
    """`generate`'s new tokens per row up to the first EOS (rows that ended early are padded after it)."""
    return [gen[:gen.index(eos_token_id)] if eos_token_id in gen else gen for gen in sequences]


@torch.inference_mode()
def generate(model, tok, examples: list[Example], *, recipe: Recipe, placement: Placement,
             desc: str = "generating", force_generate: bool = False) -> tuple[list[str], dict[str, float]]:
    """Batched generation with left padding and the KV cache, longest prompts first; outputs in input order.
    Decoding settings come from the recipe's `evaluate` section. Greedy search runs in `decoding.greedy_batch`
    (the same tokens as `model.generate`, which `force_generate` uses instead, for comparisons)."""
    from tqdm.auto import tqdm

    from tunewise.tasks.decoding import greedy_batch, plain_greedy

    cfg = recipe.evaluate
    max_prompt = max(recipe.model.max_length - cfg.max_new_tokens, 16)
    prompts = [prompt_ids(tok, ex, max_prompt) for ex in examples]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    new_tokens = 0
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
                              "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        torch.manual_seed(recipe.seed)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    # plain greedy search runs in tunewise's own loop, which gives generate's tokens with less work
    greedy = not cfg.do_sample and not force_generate and plain_greedy(model)
    bar = tqdm(total=len(prompts), desc=desc, unit="ex", leave=False)
    for s in range(0, len(order), cfg.generation_batch_size):
        idx = order[s:s + cfg.generation_batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        ids, mask = ids.to(placement.device), mask.to(placement.device)
        if greedy:
            rows = greedy_batch(model, ids, mask, max_new_tokens=cfg.max_new_tokens, eos_token_id=tok.eos_token_id)
        else:
            rows = cut_at_eos(model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, width:].tolist(),
                              tok.eos_token_id)
        for row, i in enumerate(idx):
            gen = [t for t in rows[row] if t != tok.pad_token_id]
            new_tokens += len(gen)
            outputs[i] = tok.decode(gen, skip_special_tokens=True).strip()
        bar.update(len(idx))
    bar.close()
    seconds = time.perf_counter() - t0
    return outputs, {"seconds": round(seconds, 2), "new_tokens": new_tokens,
                     "new_tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1)}


def references_of(ex: Example) -> list[str]:
    return [ex.target, *ex.references]


def prediction_rows(examples: list[Example], outputs: list[str],
                     per_example: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for ex, out, scores in zip(examples, outputs, per_example):
        prompt = ex.prompt_messages[-1]["content"] if ex.prompt_messages else ""
        rows.append({"id": ex.id, "prompt": prompt, "reference": ex.target, "references": references_of(ex),
                     "prediction": out, **{k: round(float(v), 6) for k, v in scores.items()},
                     "meta": ex.meta, "origin": ex.origin})
    return rows
