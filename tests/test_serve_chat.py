"""Chat and completions serving, tested with the official `openai` client against real tunewise servers (uvicorn on
loopback) over a real fine-tuned SmolLM2 run: non-streaming and streaming answers, stop strings, max_tokens, usage,
errors, PII redaction in the reply and the log, concurrent streams sharing decoding steps, and a gateway in front of
a second server. The run is conftest's shared tiny LoRA run on multi30k (trained once per session) and its model
is loaded once for all servers."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import copy_run

from tunewise.serve.launch import free_port

openai = pytest.importorskip("openai")

KEY, GATEWAY_KEY, UPSTREAM_KEY = "tw-chat-test-key", "tw-gateway-test-key", "tw-upstream-test-key"
PROMPTS = ["What is the capital of France?", "Name three colours.", "Write one sentence about the sea.",
           "What is 2 + 2?", "Say hello in German.", "Give me a word that rhymes with cat."]


# ---------------------------------------------------------------- the run, and servers on loopback


@pytest.fixture(scope="module")
def chat_run(session_causal_run, tmp_path_factory) -> Path:
    """A real fine-tuned causal LM: conftest's shared SmolLM2 + LoRA run on 16 multi30k pairs (one epoch, exported
    merged), in a private copy whose weights are hard links (serving must not write into the shared run)."""
    run = copy_run(session_causal_run, tmp_path_factory.mktemp("serve_chat") / session_causal_run.name)
    assert (run / "export" / "model.safetensors").is_file()
    return run


class Server:
    """A tunewise app under uvicorn in a thread of this process (so tests can read the engine's records)."""

    def __init__(self, settings):
        import uvicorn

        from tunewise.serve.app import create_app

        self.app = create_app(settings)
        self.ctx = self.app.state.ctx
        self.url = f"http://127.0.0.1:{free_port()}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=int(self.url.rsplit(":", 1)[1]),
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def client(self, key: str, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)

    def log_rows(self) -> list[dict]:
        path = self.ctx.log.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM tunewise_requests ORDER BY ts")]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(chat_run, tmp_path_factory):
    from tunewise.serve.settings import resolve_settings

    folder = tmp_path_factory.mktemp("chat_server")
    settings = resolve_settings(chat_run, [], log_url=f"sqlite:///{folder / 'log.sqlite'}")
    settings.keys_file = folder / "keys.json"  # never the user's own keys file
    settings.api_keys = f"alice={KEY},gateway={UPSTREAM_KEY}"
    srv = Server(settings)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def engine(server):
    return server.ctx.extra["engine"]


@pytest.fixture(scope="module")
def client(server):
    return server.client(KEY)


@pytest.fixture(scope="module")
def model_name(server) -> str:
    return server.ctx.model_name


def greedy_reference(engine, messages, max_tokens: int) -> str:
    """What transformers' own generate gives for the same prompt on the same weights (greedy)."""
    import torch

    ids = engine.chat_prompt(messages)
    with torch.inference_mode():
        out = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=max_tokens, do_sample=False, pad_token_id=engine.tok.pad_token_id)
    return engine.tok.decode(out[0, len(ids):], skip_special_tokens=True)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- the engine on its own


def test_engine_batches_staggered_requests_and_matches_generate(chat_run):
    """Requests arriving at different times join the running batch (continuous batching) and each gets exactly
    what transformers' generate gives it alone (fp32, greedy): padding, merged KV caches and per-row positions
    change nothing."""
    from tunewise.serve.generation import GenerationEngine, SamplingParams, load_run_lm

    lm = load_run_lm(chat_run, precision="fp32")
    eng = GenerationEngine(lm.model, lm.tokenizer, lm.placement).start()

    async def one(i: int, prompt: str):
        await asyncio.sleep(0.15 * i)  # staggered: later requests join a batch that is already decoding
        handle = eng.submit(eng.chat_prompt(user(prompt)), SamplingParams(max_tokens=10 + 3 * i, temperature=0))
        return await handle.result()

    async def all_of_them():
        return await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS[:4])))

    try:
        results = asyncio.run(all_of_them())
    finally:
        eng.close()
    for i, (prompt, res) in enumerate(zip(PROMPTS, results)):
        assert res.text == greedy_reference(eng, user(prompt), 10 + 3 * i), prompt
        assert res.finish_reason in ("stop", "length")
        assert res.completion_tokens <= 10 + 3 * i and res.prompt_tokens == len(eng.chat_prompt(user(prompt)))
    assert eng.stats.max_batch >= 2 and eng.stats.prefills >= 2  # rows were admitted while others decoded
    assert eng.stats.generated_tokens == sum(r.completion_tokens for r in results)


def test_stream_redactor_never_releases_half_an_address():
    from tunewise.safety.pii import redact
    from tunewise.serve.openai_routes import StreamRedactor

    text = "Write to jane.doe@example.com or call +44 20 7946 0958 today, and tell them to forward it please."
    sr = StreamRedactor(lambda t: redact(t)[0], hold=24)
    out = "".join(sr.feed(text[i:i + 3]) for i in range(0, len(text), 3)) + sr.flush()
    assert out == redact(text)[0] and "jane" not in out and "[EMAIL]" in out


# ---------------------------------------------------------------- chat and completions through the openai client


def test_chat_completion_matches_generate_with_usage_and_log(server, client, engine, model_name):
    messages = user("What is the capital of France?")
    r = client.chat.completions.create(model=model_name, messages=messages, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == model_name
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert choice.message.content == greedy_reference(engine, messages, 24)
    assert r.usage.prompt_tokens == len(engine.chat_prompt(messages))
    assert 0 < r.usage.completion_tokens <= 24 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # acknowledged only after commit: the row is there as soon as the answer is
    row = next(x for x in server.log_rows() if x["request_id"] == r.id.removeprefix("chatcmpl-"))
    assert row["endpoint"] == "chat" and row["key_name"] == "alice" and row["status"] == 200
    assert row["prompt_tokens"] == r.usage.prompt_tokens and row["completion_tokens"] == r.usage.completion_tokens
    assert json.loads(row["input"])[0]["content"] == "What is the capital of France?"


def test_max_tokens_ends_with_length(client, model_name):
    r = client.chat.completions.create(model=model_name, messages=user("Write a long story about a dragon."),
                                       max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_streaming_equals_non_streaming_and_stop_strings_cut(client, model_name):
    messages = user("Describe the sea in two sentences.")
    whole = client.chat.completions.create(model=model_name, messages=messages, max_tokens=40, temperature=0)
    text = whole.choices[0].message.content
    assert len(text.split()) >= 6, text  # the test's premise: a reply of several words
    chunks = list(client.chat.completions.create(model=model_name, messages=messages, max_tokens=40, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.id == chunks[0].id for c in chunks) and chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    stop = " " + text.split()[len(text.split()) // 2]
    stopped = list(client.chat.completions.create(model=model_name, messages=messages, max_tokens=40,
                                                  temperature=0, stream=True, stop=[stop, "never appears"]))
    cut = "".join(c.choices[0].delta.content or "" for c in stopped if c.choices)
    assert cut == text[:text.index(stop)] and stopped[-1].choices[0].finish_reason == "stop"
    plain = client.chat.completions.create(model=model_name, messages=messages, max_tokens=40, temperature=0,
                                           stop=stop)
    assert plain.choices[0].message.content == cut and plain.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens < whole.usage.completion_tokens


def test_completions_endpoint_with_several_prompts_and_n(client, model_name):
    r = client.completions.create(model=model_name, prompt=["Translate to German: A dog runs.\n", "The sky is"],
                                  max_tokens=6, temperature=0.8, seed=7, n=2)
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason in ("stop", "length") and c.text for c in r.choices)
    assert r.usage.completion_tokens <= 4 * 6
    again = client.completions.create(model=model_name, prompt=["Translate to German: A dog runs.\n", "The sky is"],
                                      max_tokens=6, temperature=0.8, seed=7, n=2)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # same seed, same samples
    streamed = list(client.completions.create(model=model_name, prompt="The sky is", max_tokens=6, temperature=0,
                                              stream=True))
    greedy = client.completions.create(model=model_name, prompt="The sky is", max_tokens=6, temperature=0)
    assert "".join(c.choices[0].text for c in streamed) == greedy.choices[0].text


def test_errors_are_openai_shaped_json(server, client, model_name):
    with pytest.raises(openai.AuthenticationError):
        server.client("tw-wrong").chat.completions.create(model=model_name, messages=user("hi"), max_tokens=2)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=model_name, messages=user("hi"), max_tokens=2,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model=model_name, messages=user("word " * 9000), max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.chat.completions.create(model=model_name, messages=user("hi"), temperature=3)


def test_pii_is_redacted_in_the_log_by_default(server, client, model_name):
    r = client.chat.completions.create(model=model_name, max_tokens=12, temperature=0,
                                       messages=user("Repeat exactly: my e-mail is jane.doe@example.com"))
    row = next(x for x in server.log_rows() if x["request_id"] == r.id.removeprefix("chatcmpl-"))
    assert "jane.doe@example.com" not in row["input"] and "[EMAIL]" in row["input"]
    assert json.loads(row["pii_json"]) == [["email"]]
    assert "jane.doe@example.com" not in (r.choices[0].message.content or "")  # response: redact by default


def test_concurrent_streams_share_decoding_steps(server, engine, model_name):
    """Six streams at once: the engine decodes them together (its recorded step batch sizes reach 6 rows), and
    each stream still gets its own greedy answer."""
    before = dict(engine.stats.step_batch_sizes)
    client = server.client(KEY, timeout=300)

    def stream(prompt: str) -> str:
        parts = client.chat.completions.create(model=model_name, messages=user(prompt), max_tokens=24,
                                               temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in parts if c.choices)

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        texts = list(pool.map(stream, PROMPTS))
    assert all(texts)
    steps = {k: v - before.get(k, 0) for k, v in engine.stats.step_batch_sizes.items()}
    shared = sum(v for k, v in steps.items() if k >= 3)
    assert shared > 0 and max(k for k, v in steps.items() if v > 0) >= 4, steps
    import httpx

    text = httpx.get(server.url + "/metrics").text
    assert 'tunewise_tokens_generated_total{endpoint="chat"}' in text
    assert 'tunewise_batch_size_count{endpoint="chat"}' in text


# ---------------------------------------------------------------- gateway mode


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    """A second tunewise server in gateway mode, with its own keys and log, in front of `server`."""
    import os

    from tunewise.serve.settings import resolve_settings

    folder = tmp_path_factory.mktemp("gateway")
    settings = resolve_settings(None, [], upstream=server.url + "/v1", log_url=f"sqlite:///{folder / 'log.sqlite'}")
    settings.keys_file = folder / "keys.json"
    settings.api_keys = f"carol={GATEWAY_KEY}"
    os.environ["TUNEWISE_UPSTREAM_API_KEY"] = UPSTREAM_KEY
    try:
        srv = Server(settings)
    finally:
        del os.environ["TUNEWISE_UPSTREAM_API_KEY"]
    yield srv
    srv.stop()


def test_gateway_forwards_chat_and_streams(server, gateway, client, model_name):
    g = gateway.client(GATEWAY_KEY)
    messages = user("What is the capital of France?")
    direct = client.chat.completions.create(model=model_name, messages=messages, max_tokens=16, temperature=0)
    via = g.chat.completions.create(model=model_name, messages=messages, max_tokens=16, temperature=0)
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.usage.completion_tokens == direct.usage.completion_tokens and via.id.startswith("chatcmpl-")

    chunks = list(g.chat.completions.create(model=model_name, messages=messages, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == direct.usage.completion_tokens
    completion = g.completions.create(model=model_name, prompt="The sky is", max_tokens=5, temperature=0)
    assert completion.choices[0].text

    # the gateway keeps its own log (key names of ITS clients) and the upstream logs the gateway's key
    rows = gateway.log_rows()
    assert {r["key_name"] for r in rows} == {"carol"} and {r["endpoint"] for r in rows} >= {"chat", "completions"}
    streamed_row = next(r for r in rows if r["request_id"] == chunks[0].id.removeprefix("chatcmpl-"))
    assert streamed_row["completion_tokens"] == direct.usage.completion_tokens
    assert "gateway" in {r["key_name"] for r in server.log_rows()}

    with pytest.raises(openai.AuthenticationError):  # the gateway's own keys, not the upstream's
        gateway.client(KEY).chat.completions.create(model=model_name, messages=messages, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="context"):  # upstream 400s come through with their message
        g.chat.completions.create(model=model_name, messages=user("word " * 9000), max_tokens=2)


def test_gateway_maps_a_dead_upstream_to_502(tmp_path):
    from tunewise.serve.settings import resolve_settings

    settings = resolve_settings(None, [], upstream=f"http://127.0.0.1:{free_port()}",
                                log_url=f"sqlite:///{tmp_path / 'log.sqlite'}")
    settings.keys_file, settings.api_keys = tmp_path / "keys.json", f"carol={GATEWAY_KEY}"
    srv = Server(settings)
    try:
        with pytest.raises(openai.InternalServerError, match="could not be reached") as info:
            srv.client(GATEWAY_KEY).chat.completions.create(model="any", messages=user("hi"), max_tokens=2)
        assert info.value.status_code == 502
        with pytest.raises(openai.APIStatusError, match="could not be reached"):
            list(srv.client(GATEWAY_KEY).chat.completions.create(model="any", messages=user("hi"), max_tokens=2,
                                                                 stream=True))
        assert [r["status"] for r in srv.log_rows()] == [502, 502]
    finally:
        srv.stop()
