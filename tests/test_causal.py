"""Causal-LM SFT on the real SmolLM2 (converted once from its GGUF into the cache): loss masks, packing, LoRA merge,
bad input, and one tiny end-to-end run through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CAUSAL_TEST_ROWS, native_bf16_matmuls, needs_bf16_matmuls
from tunewise.artifacts.rows import Example
from tunewise.data.readers import ExampleChecker, read_records
from tunewise.errors import DataError, RecipeError
from tunewise.models import resolve_base_model
from tunewise.recipe import load_recipe
from tunewise.tasks.causal import (
    IGNORE,
    CausalCollator,
    TemplateError,
    TooLong,
    as_features,
    encode,
    encode_all,
    load_causal_lm,
    load_tokenizer,
    pack,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def smol_path() -> Path:
    return resolve_base_model("smollm2").path


@pytest.fixture(scope="module")
def tok(smol_path):
    return load_tokenizer(smol_path)


@pytest.fixture(scope="module")
def model(smol_path):
    m = load_causal_lm(smol_path)
    m.eval()
    return m


def trained_text(tok, e) -> str:
    return tok.decode([t for t, lab in zip(e.input_ids, e.labels) if lab != IGNORE])


def chat(*turns, weights=None) -> Example:
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": r, "content": c} for r, c in zip(roles, turns)]
    for i, w in (weights or {}).items():
        messages[i]["weight"] = w
    return Example("ex", messages, {}, "test.jsonl:1")


# ---------------------------------------------------------------- the converted base model


def test_smollm2_converts_once_and_pad_is_not_eos(smol_path, tok):
    assert (smol_path / "model.safetensors").is_file() and (smol_path / "config.json").is_file()
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert resolve_base_model("smollm2").path == smol_path  # cached: keyed by the GGUF's hash


def test_smollm2_template_has_no_generation_markers(tok):
    # the reason masks are built from rendered spans: TRL's assistant_only_loss needs {% generation %}
    assert tok.chat_template and "{% generation %}" not in tok.chat_template


# ---------------------------------------------------------------- loss masks


def test_generation_mask_trains_completion_and_eos_only(tok):
    ex = Example("a", [{"role": "user", "content": "Translate to German: a red car"},
                       {"role": "assistant", "content": "ein rotes Auto"}], {}, "f:1")
    e = encode(tok, ex, task="generation", max_length=256)
    assert trained_text(tok, e) == "ein rotes Auto" + tok.eos_token
    last = max(i for i, lab in enumerate(e.labels) if lab != IGNORE)
    assert e.input_ids[last] == tok.eos_token_id and e.labels[last] == tok.eos_token_id
    assert "Translate" not in trained_text(tok, e)
    assert tok.pad_token_id not in e.input_ids


def test_multi_turn_chat_trains_every_assistant_turn(tok):
    e = encode(tok, chat("Hi", "Hello! How can I help?", "What is 2+2?", "4"), task="chat", max_length=256)
    assert trained_text(tok, e) == f"Hello! How can I help?{tok.eos_token}4{tok.eos_token}"


def test_weight_zero_turn_is_context_not_target(tok):
    e = encode(tok, chat("Hi", "Bad answer", "Again?", "Good answer", weights={1: 0}), task="chat", max_length=256)
    assert trained_text(tok, e) == f"Good answer{tok.eos_token}"
    full = tok.decode(e.input_ids)
    assert "Bad answer" in full  # still seen as context


def test_truncation_cuts_the_prompt_end_and_keeps_instruction_and_reply(tok):
    long = "Summarize the dialogue.\n\n" + " ".join(f"word{i}" for i in range(400))
    ex = Example("a", [{"role": "user", "content": long}, {"role": "assistant", "content": "A short summary."}],
                 {}, "f:1")
    e = encode(tok, ex, task="generation", max_length=96)
    assert len(e.input_ids) == 96 and e.truncated > 0
    assert trained_text(tok, e) == "A short summary." + tok.eos_token
    text = tok.decode(e.input_ids)
    assert "Summarize the dialogue." in text and "<|im_start|>assistant" in text
    with pytest.raises(TooLong, match="max_length=96"):
        encode(tok, ex, task="generation", max_length=96, truncation="reject")


def test_template_without_chat_template_falls_back_to_plain_concatenation(smol_path):
    plain = load_tokenizer(smol_path)
    plain.chat_template = None
    ex = Example("a", [{"role": "user", "content": "English: a dog"}, {"role": "assistant", "content": "Deutsch: ein Hund"}],
                 {}, "f:1")
    e = encode(plain, ex, task="generation", max_length=64)
    assert trained_text(plain, e) == "Deutsch: ein Hund" + plain.eos_token
    assert plain.decode(e.input_ids).startswith("English: a dog\n")
    with pytest.raises(TemplateError, match="no chat template"):
        encode(plain, chat("hi", "there"), task="chat", max_length=64)


def test_template_that_is_not_a_growing_prefix_is_quarantined(smol_path):
    odd = load_tokenizer(smol_path)
    # renders the conversation newest-first: assistant turns cannot be located by prefix
    odd.chat_template = "{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    encoded, rejected = encode_all(odd, [chat("a", "b", "c", "d")], task="chat", max_length=64, truncation="truncate",
                                   split="train")
    assert encoded == [] and rejected[0]["check"] == "template"
    assert "growing prefix" in rejected[0]["reason"] and "test.jsonl:1" in rejected[0]["reason"]


def test_too_long_with_reject_is_quarantined_with_a_count(tok):
    long = chat("x " * 300, "y")
    encoded, rejected = encode_all(tok, [long, chat("hi", "there")], task="chat", max_length=64,
                                   truncation="reject", split="train")
    assert len(encoded) == 1 and len(rejected) == 1 and rejected[0]["check"] == "too_long"


# ---------------------------------------------------------------- packing


def test_packed_loss_and_logits_equal_unpacked(tok, model):
    examples = [chat("Name a colour.", "Blue."), chat("What is the capital of France?", "Paris is the capital."),
                chat("Count to three.", "One, two, three.", "And back?", "Three, two, one.")]
    enc = [encode(tok, ex, task="chat", max_length=256) for ex in examples]
    collate = CausalCollator(tok.pad_token_id)
    rows = pack(enc, max_length=512)
    assert len(rows) == 1 and rows[0]["seq_lens"] == sorted((len(e.input_ids) for e in enc), reverse=True)
    with torch.no_grad():
        unpacked = collate(as_features(enc))
        out_u = model(**unpacked)
        packed = collate(rows)
        out_p = model(**packed)
    # token-mean loss over the same trained tokens: the shift never crosses a sequence boundary
    assert out_p.loss.item() == pytest.approx(out_u.loss.item(), abs=1e-4)
    # and each sequence's logits are the same packed or alone
    start = 0
    for n in rows[0]["seq_lens"]:
        i = next(k for k, e in enumerate(enc) if len(e.input_ids) == n)
        diff = (out_p.logits[0, start:start + n] - out_u.logits[i, :n]).abs().max().item()
        assert diff < 1e-3, f"packed sequence of length {n} differs by {diff}"
        start += n


def test_position_ids_alone_would_contaminate(tok, model):
    # the reason for the 4D mask: with a plain 2D mask the second sequence attends to the first
    enc = [encode(tok, chat("Name a colour.", "Blue."), task="chat", max_length=64),
           encode(tok, chat("Name an animal.", "A cat."), task="chat", max_length=64)]
    row = pack(enc, 256)[0]
    batch = CausalCollator(tok.pad_token_id)([row])
    with torch.no_grad():
        good = model(**batch).logits
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        bad = model(**batch).logits
    n = row["seq_lens"][0]
    assert (good[0, n:] - bad[0, n:]).abs().max().item() > 1e-2


# ---------------------------------------------------------------- LoRA merge and export


def test_merged_export_matches_adapter_logits(tmp_path, smol_path, tok, model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunewise.export.merge import export_model

    torch.manual_seed(0)
    peft_model = get_peft_model(load_causal_lm(smol_path),
                                LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM",
                                           init_lora_weights=False))  # non-zero B: the merge must change weights
    peft_model.eval()
    adapter_dir = tmp_path / "model"
    peft_model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    ids = torch.tensor([tok("The quick brown fox jumps over the lazy dog.")["input_ids"]])
    with torch.no_grad():
        adapter_logits = peft_model(input_ids=ids).logits

    recipe = load_recipe(_write(tmp_path / "r.yaml", {"name": "x", "task": "generation", "model": {"base": "smollm2"},
                                                      "data": {"train": "unused.jsonl"}}))
    out = tmp_path / "export"
    out.mkdir()
    message = export_model(recipe, resolve_base_model("smollm2"), adapter_dir, out, merge=True)
    assert "merged" in message and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    merged.eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    assert (merged_logits - adapter_logits).abs().max().item() < 1e-3
    with torch.no_grad():
        plain = model(input_ids=ids).logits  # the module's unmodified base model (peft wrapped its own copy)
    assert (plain - adapter_logits).abs().max().item() > 1e-2  # the adapter really changed the model
    assert json.loads((out / "EXPORT.json").read_text())["merged"] is True


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- greedy decoding for evaluation


def _left_padded(tok, prompts: list[str]):
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False),
               add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    batch = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for r, row in enumerate(ids):
        batch[r, width - len(row):], mask[r, width - len(row):] = torch.tensor(row), 1
    return batch, mask


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16_matmuls)])
def test_greedy_batch_gives_generates_tokens_with_finished_rows_dropped(tok, model, dtype):
    """The evaluation decoder against `model.generate(do_sample=False)` on the same left-padded batches: the same
    ids in fp32 and bf16, for rows that end early (so the batch shrinks mid-way), rows that run to the limit, and a
    batch with no padding (generate drops the mask there)."""
    from tunewise.tasks.causal import cut_at_eos
    from tunewise.tasks.decoding import greedy_batch, plain_greedy

    dialogue = (DATA / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()[0]
    prompts = ["Reply with only yes or no: is fire hot?", "What is 2+2? Reply with the number only.",
               "Summarize the dialogue.\n\n" + json.loads(dialogue)["dialogue"], "Say hello."]
    lm = model.to(dtype)
    new, penalty = 16, lm.generation_config.repetition_penalty
    try:
        assert plain_greedy(lm)
        ended_early = reached_limit = 0
        for batch_prompts in (prompts, [prompts[3], prompts[3]]):
            ids, mask = _left_padded(tok, batch_prompts)
            ours = greedy_batch(lm, ids, mask, max_new_tokens=new, eos_token_id=tok.eos_token_id)
            with torch.inference_mode():
                out = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, temperature=None,
                                  top_p=None, top_k=None)
            theirs = cut_at_eos(out[:, ids.shape[1]:].tolist(), tok.eos_token_id)
            assert ours == theirs
            ended_early += sum(len(r) < new for r in ours)
            reached_limit += sum(len(r) == new for r in ours)
        assert ended_early and reached_limit, (ended_early, reached_limit)
        lm.generation_config.repetition_penalty = 1.3  # a logits processor: evaluation must go through generate
        assert not plain_greedy(lm)
    finally:
        lm.generation_config.repetition_penalty = penalty
        model.to(torch.float32)


# ---------------------------------------------------------------- bad input


def _chat_file(tmp_path: Path, rows: list) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("messages, field, words", [
    ([{"role": "user", "content": "hi"}], "messages", "no assistant message"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "messages[1].role", "'bot'"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "messages[1].content", "empty"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 2}], "messages[1].weight",
     "expected 0"),
    ([{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "x"}], "messages[0].weight",
     "only assistant"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 0}], "messages",
     "weight 0 on every"),
    ("not a list", "messages", "not JSON"),
])
def test_bad_chat_rows_name_line_and_field(tmp_path, messages, field, words):
    path = _chat_file(tmp_path, [{"messages": [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ok"}]},
                                 {"messages": messages}])
    checker = ExampleChecker("chat")
    with pytest.raises(DataError) as err:
        read_records(path, checker)
    msg = str(err.value)
    assert f"chat.jsonl:2: field '{field}'" in msg and words in msg
    rows, bad = read_records(path, checker, on_error="quarantine", max_quarantine_fraction=1.0)
    assert len(rows) == 1 and len(bad) == 1 and bad[0].line == 2


def test_generation_empty_completion_and_missing_template_column(tmp_path):
    path = tmp_path / "gen.jsonl"
    path.write_text(json.dumps({"dialogue": "a", "summary": "b"}) + "\n" + json.dumps({"dialogue": "a", "summary": " "})
                    + "\n" + json.dumps({"text": "a", "summary": "b"}) + "\n")
    checker = ExampleChecker("generation", prompt_template="Summarize:\n{dialogue}", completion_field="summary")
    rows, bad = read_records(path, checker, on_error="quarantine", max_quarantine_fraction=1.0)
    assert [b.line for b in bad] == [2, 3]
    assert bad[0].field == "summary" and "whitespace only" in bad[0].reason
    assert bad[1].field == "dialogue" and "missing" in bad[1].reason
    assert rows[0].messages[0]["content"] == "Summarize:\na"


def test_bad_prompt_template_is_a_recipe_error(tmp_path):
    recipe = _write(tmp_path / "r.yaml", {"name": "x", "task": "generation", "data": {
        "train": "t.jsonl", "prompt_template": "Summarize {dialogue"}})
    with pytest.raises(RecipeError, match="data.prompt_template"):
        load_recipe(recipe)
    recipe = _write(tmp_path / "r.yaml", {"name": "x", "task": "generation", "data": {
        "train": "t.jsonl", "prompt_template": "Summarize {}"}})
    with pytest.raises(RecipeError, match="positional"):
        load_recipe(recipe)


def test_classification_baselines_are_refused_for_generation(tmp_path):
    recipe = _write(tmp_path / "r.yaml", {"name": "x", "task": "chat", "data": {"train": "t.jsonl"},
                                          "evaluate": {"baselines": ["tfidf_logreg"]}})
    with pytest.raises(RecipeError, match="base_model"):
        load_recipe(recipe)


# ---------------------------------------------------------------- end to end through the CLI


@pytest.fixture(scope="module")
def tiny_translation(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mt")
    rows = [json.loads(line) for line in (DATA / "multi30k_en_de" / "train.jsonl").read_text().splitlines()[:24]]
    test = [json.loads(line) for line in (DATA / "multi30k_en_de" / "test_2016_flickr.jsonl").read_text().splitlines()[:6]]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    return _write(root / "mt.yaml", {
        "name": "mt-tiny", "task": "generation", "output_dir": str(root / "runs"), "audit": {"enabled": False},
        "data": {"train": "train.jsonl", "test": "test.jsonl", "prompt_template": "Translate to German: {en}",
                 "completion_field": "de", "validation_fraction": 0.2},
        "model": {"base": "smollm2", "max_length": 96},
        "train": {"epochs": 1, "batch_size": 8, "lr": 5e-4, "precision": "fp32", "early_stopping_patience": None},
        "evaluate": {"max_new_tokens": 12, "bootstrap_samples": 200, "generation_batch_size": 8},
        "probes": {"crows_pairs": False}})  # 1,508 pairs x 2 models; tests/test_probes.py covers CrowS-Pairs


def test_show_mask_cli(tunewise, tiny_translation):
    proc = tunewise("data", "show-mask", tiny_translation, "--n", "2", "--no-color")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("<|im_end|>]]") == 2  # two examples, each reply trained through its EOS
    assert "Translate to German: Two young, White males" in proc.stdout


def test_generation_run_end_to_end(tunewise, session_causal_run, jsonl):
    run = session_causal_run  # one full `tunewise run` of SmolLM2 + LoRA (conftest), shared with serving and humaneval
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    ft = metrics["models"]["fine_tuned"]["metrics"]
    for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "length_ratio"):
        assert ft[name]["ci_low"] <= ft[name]["value"] <= ft[name]["ci_high"], name
    assert {c["baseline"] for c in metrics["comparisons"]} == {"base_model"}
    assert "nrefs:1" in metrics["text_metric_signatures"]["bleu"]
    preds = jsonl(run / "eval" / "predictions.jsonl")
    assert [p["id"] for p in preds] == [f"test:{i}" for i in range(1, CAUSAL_TEST_ROWS + 1)]
    assert all("prediction" in p for p in preds)
    summary = json.loads((run / "model" / "train_summary.json").read_text())
    assert summary["finetune"] == "lora" and summary["trained_tokens"] > 0
    assert summary["per_epoch"] and summary["per_epoch"][0]["eval_mean_token_accuracy"] is not None
    assert (run / "model" / "adapter_model.safetensors").is_file()
    assert (run / "export" / "model.safetensors").is_file() and (run / "report.html").is_file()
    html = (run / "report.html").read_text()
    assert "Loss mask" in html and '<mark class="trained">' in html  # the report shows what show-mask prints
    card = (run / "card" / "README.md").read_text()
    assert "base_model" in card or "zero-shot" in card
    assert tunewise("verify", run).returncode == 0


# kill -9 and --resume of a LoRA run, compared with an uninterrupted one: tests/test_faults.py


def test_trained_positions_loss_equals_the_full_model_loss(tok, model):
    from tunewise.train.causal import trained_positions_loss

    enc = [encode(tok, chat("Name a colour.", "Blue."), task="chat", max_length=64),
           encode(tok, chat("What is the capital of France?", "Paris is the capital."), task="chat", max_length=64)]
    batch = CausalCollator(tok.pad_token_id)(as_features(enc))
    with torch.no_grad():
        full = model(**batch)
        loss, preds = trained_positions_loss(model, batch)
    assert loss.item() == pytest.approx(full.loss.item(), abs=1e-5)
    keep = batch["labels"][:, 1:] != IGNORE
    assert torch.equal(preds[:, :-1][keep], full.logits.argmax(-1)[:, :-1][keep])


def test_full_fine_tuning_run(tunewise, tiny_translation, tmp_path):
    # output_dir under tmp_path: the full model and its exported copy (~1 GB) go with the test
    proc = tunewise("run", tiny_translation, "model.finetune=full", "evaluate.baselines=[]", "data.train.max_rows=8",
                    "evaluate.max_examples=2", "evaluate.max_new_tokens=4", "probes.enabled=false",
                    f"output_dir={tmp_path / 'runs'}")
    assert proc.returncode == 0, proc.stderr
    run = Path(proc.stdout.split("run directory: ")[1].split()[0])
    summary = json.loads((run / "model" / "train_summary.json").read_text())
    assert summary["finetune"] == "full" and summary["trainable_parameters"] == summary["parameters"]
    assert summary["train_examples"] == 6  # 8 rows, 2 carved for validation
    assert (run / "model" / "model.safetensors").is_file() and not (run / "model" / "adapter_config.json").exists()
    export = json.loads((run / "export" / "EXPORT.json").read_text())
    assert export["merged"] is False and "copied" in export["how"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert list(metrics["models"]) == ["fine_tuned"] and metrics["comparisons"] == []


def test_right_padded_batch_needs_no_padding_mask(tok, model):
    # real tokens precede pads, so causal attention alone hides the pads: same logits as with a 2D mask
    enc = [encode(tok, chat("Hi", "Hello there, how are you today?"), task="chat", max_length=64),
           encode(tok, chat("Name a colour.", "Blue."), task="chat", max_length=64)]
    plain = CausalCollator(tok.pad_token_id)(as_features(enc))
    masked = CausalCollator(tok.pad_token_id, padding_mask=True)(as_features(enc))
    assert "attention_mask" not in plain and masked["attention_mask"].sum() < masked["attention_mask"].numel()
    with torch.no_grad():
        a = model(**plain)
        b = model(**masked)
    short = len(enc[1].input_ids)
    assert (a.logits[1, :short] - b.logits[1, :short]).abs().max().item() < 1e-3
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-5)


def _saved_activation_bytes(model, batch) -> tuple[float, int]:
    """(loss, bytes of the distinct tensors autograd keeps for the backward pass) of one LoRA forward under
    autocast: the activation memory a training step holds at its peak, without timing anything."""
    from tunewise.train.causal import trained_positions_loss

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in weights:  # a weight's transposed view is the model, not activations
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = trained_positions_loss(model, batch)
    return float(loss), sum(seen.values())


@needs_bf16_matmuls
def test_frozen_base_in_bf16_keeps_fp32_adapters_and_halves_what_backward_keeps(smol_path, tok):
    """LoRA on bf16 hardware holds the whole frozen base in bf16 and leaves the adapters' inputs in bf16: the
    adapters and their gradients stay fp32, the loss stays within a bf16 rounding of the fp32-stream setup it
    replaced (frozen Linear weights bf16, everything else fp32), and the activations autograd keeps shrink (they
    are counted, not timed: the same on any machine)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from tunewise.recipe import load_recipe
    from tunewise.train.causal import hold_frozen_base_in_bf16, lora_inputs_in_compute_dtype, wrap_lora

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "examples" / "dialogsum.yaml")
    dialogue = json.loads((DATA / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()[0])
    enc = encode(tok, Example("d", [{"role": "user", "content": "Summarize.\n\n" + dialogue["dialogue"]},
                                    {"role": "assistant", "content": dialogue["summary1"]}], {}, "t:1"),
                 task="generation", max_length=512)
    batch = {"input_ids": torch.tensor([enc.input_ids] * 2), "labels": torch.tensor([enc.labels] * 2)}

    before = load_causal_lm(smol_path)  # the previous default: only the Linear weights in bf16
    for module in before.modules():
        if isinstance(module, torch.nn.Linear) and module.weight is not before.get_input_embeddings().weight:
            module.to(torch.bfloat16)
    before = wrap_lora(before, recipe)
    now = load_causal_lm(smol_path)
    assert hold_frozen_base_in_bf16(now) == sum(p.numel() for p in now.parameters())
    now = wrap_lora(now, recipe)
    lora_inputs_in_compute_dtype(now)

    assert all(p.dtype == torch.bfloat16 for n, p in now.named_parameters() if not p.requires_grad)
    assert all(p.dtype == torch.float32 and "lora_" in n for n, p in now.named_parameters() if p.requires_grad)
    assert not any(m.cast_input_dtype_enabled for m in now.modules() if isinstance(m, BaseTunerLayer))
    loss_before, kept_before = _saved_activation_bytes(before, batch)
    loss_now, kept_now = _saved_activation_bytes(now, batch)
    assert abs(loss_now - loss_before) < 0.02 * loss_before, (loss_now, loss_before)
    assert kept_now < 0.85 * kept_before, (kept_now, kept_before)  # measured 0.77 (571 against 740 MB)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from tunewise.train.causal import trained_positions_loss

        trained_positions_loss(now, batch)[0].backward()
    grads = [p.grad for p in now.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


_FREED_MEMORY_PROBE = """
import sys
from tunewise.hardware import return_freed_memory
if sys.argv[1] == "on":
    assert return_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20
first = bytearray(2 << 20)
del first  # glibc's default: freeing an mmapped block raises its mmap threshold above that size
base, big, keep = rss_mb(), [], []
for _ in range(200):  # 2 MiB blocks with small live objects between them, as activations and bookkeeping interleave
    b = bytearray(2 << 20)
    b[::4096] = b"x" * len(b[::4096])
    big.append(b)
    keep.append(bytearray(1000))
del big
print(rss_mb() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
def test_return_freed_memory_gives_freed_blocks_back_to_the_os():
    """glibc's default keeps freed 2 MiB blocks on a fragmented heap (RSS stays up by the 400 MiB freed); after
    hardware.return_freed_memory() (the bench's tunewise-malloc lever) they are unmapped when freed. No torch."""
    import subprocess
    import sys

    kept = {mode: float(subprocess.run([sys.executable, "-c", _FREED_MEMORY_PROBE, mode], capture_output=True,
                                       text=True, check=True).stdout) for mode in ("off", "on")}
    assert kept["off"] > 300 and kept["on"] < 50, kept


def test_micro_batches_split_a_batch_into_equal_parts_within_the_token_budget():
    from tunewise.train.common import micro_batches

    assert micro_batches(4, 512, 1024) == 2 and micro_batches(8, 512, 1024) == 4
    assert micro_batches(6, 512, 1024) == 3 and micro_batches(5, 512, 1024) == 5  # 5 rows split only one by one
    assert micro_batches(8, 96, 1024) == 1 and micro_batches(4, 512, None) == 1
    assert micro_batches(4, 2048, 1024) == 4  # over budget even at one row: one row each


def test_micro_batching_trains_the_same_adapter_as_the_whole_batch(tiny_translation, tmp_path, monkeypatch):
    """train.micro_batch_tokens splits each batch and accumulates the gradients: the same examples make each
    optimizer step and the loss is normalised over the whole batch's trained tokens, so the adapter equals the
    unsplit one (fp32, random order: the sampler's order does not depend on the micro-batch size)."""
    from safetensors.torch import load_file

    from tunewise.pipeline import open_run, run_stage
    from tunewise.stages import RunOptions

    monkeypatch.setenv("TUNEWISE_THREADS", "1")
    adapters, summaries = {}, {}
    for budget in (None, 192):  # 8 rows x 96 tokens: whole, or 4 micro-batches of 2 rows
        rd = open_run(tiny_translation, [f"train.micro_batch_tokens={'null' if budget is None else budget}",
                                         "train.group_by_length=false", "data.train.max_rows=16",
                                         "data.validation_fraction=0.25", f"output_dir={tmp_path / 'runs'}"])
        run_stage(rd, "data", RunOptions())
        run_stage(rd, "train", RunOptions())
        adapters[budget] = load_file(rd.stage_dir("train") / "adapter_model.safetensors")
        summaries[budget] = json.loads((rd.stage_dir("train") / "train_summary.json").read_text())
    assert summaries[192]["micro_batches"] == 4 and summaries[None]["micro_batches"] == 1
    assert summaries[192]["global_steps"] == summaries[None]["global_steps"] == 2
    assert summaries[192]["trained_tokens"] == summaries[None]["trained_tokens"]
    assert adapters[None].keys() == adapters[192].keys()
    # float sums in another order: a rounding-sized difference (Adam's first steps move each weight by about
    # lr, whatever the gradient's size, so a sign flip on a near-zero gradient shows as a whole lr)
    diff = sum(float((adapters[192][k] - adapters[None][k]).norm() ** 2) for k in adapters[None]) ** 0.5
    size = sum(float(adapters[None][k].norm() ** 2) for k in adapters[None]) ** 0.5
    print(f"adapters differ by {diff / size:.2e} of their norm")
    assert diff / size < 1e-6


@needs_bf16_matmuls
def test_bf16_lora_stage_trains_fp32_adapters_on_a_bf16_base(tiny_translation, tmp_path, monkeypatch, jsonl):
    """The train stage at precision bf16 (what `auto` picks on AMX CPUs and bf16 GPUs): the summary says the base
    was held in bf16, the saved adapter is fp32, and training moved it (its B matrices start at zero)."""
    from safetensors.torch import load_file

    from tunewise.pipeline import open_run, run_stage
    from tunewise.stages import RunOptions

    monkeypatch.setenv("TUNEWISE_THREADS", "1")
    rd = open_run(tiny_translation, ["train.precision=bf16", "data.train.max_rows=16", "data.validation_fraction=0.25",
                                     f"output_dir={tmp_path / 'runs'}"])
    run_stage(rd, "data", RunOptions())
    run_stage(rd, "train", RunOptions())
    summary = json.loads((rd.stage_dir("train") / "train_summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["base_weights_dtype"] == "bfloat16"
    adapter = load_file(rd.stage_dir("train") / "adapter_model.safetensors")
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    assert any(float(t.abs().sum()) > 0 for k, t in adapter.items() if "lora_B" in k)
    losses = [e["loss"] for e in jsonl(rd.stage_dir("train") / "train_log.jsonl") if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)


def test_compile_is_chosen_where_it_pays_and_refused_clearly_where_it_cannot_run(monkeypatch):
    import tunewise.train.causal as train_causal
    from tunewise.errors import RecipeError
    from tunewise.hardware import Placement

    amx = Placement(device="cpu", precision="bf16", reason="AMX")
    fp32 = Placement(device="cpu", precision="fp32", reason="no AMX")
    big, small = 10 * train_causal.COMPILE_MIN_TOKENS, train_causal.COMPILE_MIN_TOKENS - 1
    monkeypatch.setattr(train_causal, "cpu_has_amx", lambda: False)  # bf16 from AVX-512 alone: compile unmeasured
    assert not train_causal.choose_compile("auto", amx, big, False)[0]
    monkeypatch.setattr(train_causal, "cpu_has_amx", lambda: True)
    assert train_causal.choose_compile("auto", amx, big, False)[0] is (train_causal.inductor_compiler() is not None)
    off, why = train_causal.choose_compile("auto", amx, small, False)
    assert not off and "under the 250,000" in why
    assert not train_causal.choose_compile("auto", fp32, big, False)[0]
    assert not train_causal.choose_compile("auto", amx, big, True)[0]  # gradient checkpointing
    assert train_causal.choose_compile(False, amx, big, False) == (False, "train.compile=false")
    monkeypatch.setattr(train_causal, "inductor_compiler", lambda: None)  # a machine without g++ or clang++
    assert not train_causal.choose_compile("auto", amx, big, False)[0]
    with pytest.raises(RecipeError, match="C\\+\\+ compiler"):
        train_causal.choose_compile(True, amx, big, False)


@pytest.mark.skipif(__import__("tunewise.train.causal", fromlist=["x"]).inductor_compiler() is None,
                    reason="torch.compile needs a C++ compiler on CPU")
@pytest.mark.skipif(not native_bf16_matmuls(), reason="train.compile=auto compiles only in bf16, which this CPU "
                    "emulates; forcing it on in fp32 here costs over 2 minutes of suite time")
def test_compiled_decoder_layers_train_like_eager_ones(tiny_translation, tmp_path, monkeypatch):
    """train.compile=true compiles every decoder layer (one graph for all of them): the run records it, gradients
    reach the adapters through the compiled layers, the loss stays within rounding of eager mode, and the saved
    adapter keeps the state-dict keys of an eager run. In the precision `auto` picks: bf16 where the CPU has AMX,
    fp32 elsewhere (forced bf16 on a CPU that only emulates it would take minutes)."""
    from safetensors.torch import load_file

    from tunewise.pipeline import open_run, run_stage
    from tunewise.stages import RunOptions

    monkeypatch.setenv("TUNEWISE_THREADS", "1")
    summaries, adapters = {}, {}
    for setting in ("false", "true"):
        rd = open_run(tiny_translation, [f"train.compile={setting}", "data.train.max_rows=16",
                                         "data.validation_fraction=0.25", f"output_dir={tmp_path / setting}"])
        run_stage(rd, "data", RunOptions())
        run_stage(rd, "train", RunOptions())
        summaries[setting] = json.loads((rd.stage_dir("train") / "train_summary.json").read_text())
        adapters[setting] = load_file(rd.stage_dir("train") / "adapter_model.safetensors")
    assert summaries["true"]["compiled"] and summaries["true"]["compile_reason"] == "train.compile=true"
    assert not summaries["false"]["compiled"]
    assert adapters["true"].keys() == adapters["false"].keys()
    assert any(float(t.abs().sum()) > 0 for k, t in adapters["true"].items() if "lora_B" in k)
    eager, compiled = summaries["false"]["final_train_loss"], summaries["true"]["final_train_loss"]
    assert abs(compiled - eager) < 0.02 * eager, (compiled, eager)
    val = [s["per_epoch"][-1]["eval_loss"] for s in (summaries["false"], summaries["true"])]
    assert abs(val[1] - val[0]) < 0.02 * val[0], val


def test_packed_training_sees_the_same_tokens_and_loss_as_unpacked(tiny_translation, tmp_path, monkeypatch):
    """train.packing=true through the train stage: the examples go into fewer rows, the trained tokens stay the
    same, and the loss of the one optimizer step (every example in one batch, before any update) equals the unpacked
    loss to rounding, since it is normalised over the batch's trained tokens and attention stays within an example."""
    from tunewise.pipeline import open_run, run_stage
    from tunewise.stages import RunOptions

    monkeypatch.setenv("TUNEWISE_THREADS", "1")
    summaries = {}
    for packing in ("false", "true"):
        rd = open_run(tiny_translation, [f"train.packing={packing}", "train.batch_size=16", "train.compile=false",
                                         "model.max_length=256", "data.train.max_rows=16", "data.validation_fraction=0.25",
                                         f"output_dir={tmp_path / packing}"])
        run_stage(rd, "data", RunOptions())
        run_stage(rd, "train", RunOptions())
        summaries[packing] = json.loads((rd.stage_dir("train") / "train_summary.json").read_text())
    plain, packed = summaries["false"], summaries["true"]
    assert packed["packing"] and not plain["packing"]
    assert packed["train_examples"] == plain["train_examples"] == plain["train_rows"] == 12
    assert packed["train_rows"] <= 4  # 12 captions of 63-88 tokens (chat template included), three to a row of 256
    assert packed["trained_tokens"] == plain["trained_tokens"]
    assert packed["global_steps"] == plain["global_steps"] == 1
    loss = [s["final_train_loss"] for s in (plain, packed)]
    assert abs(loss[1] - loss[0]) < 1e-4 * loss[0], loss
