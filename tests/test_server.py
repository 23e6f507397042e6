"""The OpenAI-compatible server (scripts/serve_openai_api.py, serving/) as a real process on localhost, asked
by the official openai client and by a raw SSE read with httpx: the model list (checkpoints and fitting
adapters), answers equal to TinyMind's own greedy decoding, streaming, stop strings, usage, concurrent
requests decoded together giving what each gives alone, OpenAI-shaped errors with their status, the API key,
and a client that goes away mid-stream.

    pytest tests/test_server.py
"""
import concurrent.futures as cf
import json
import time

import httpx
import openai
import pytest

from factories import make_adapter, make_checkpoint, start_server, stop_server

MESSAGES = [{"role": "user", "content": "Tell me about music and the piano"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    base = make_checkpoint(out / "full_sft_64.pth", std=0.2, max_position_embeddings=256)
    make_adapter(out / "lora" / "lora_x_64.pth", base)
    make_checkpoint(out / "long_64.pth", std=0.2, max_position_embeddings=32768)     # room for a long reply
    make_checkpoint(out / "other_64.pth", seed=5, max_position_embeddings=256)     # another base the adapter fits
    (out / "broken_64.pth").write_bytes(b"not a checkpoint")                        # not offered
    proc, url = start_server(out, "--max_tokens", "30000")
    yield url, out
    stop_server(proc)


def client(url, key="none"):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def ours(out, max_tokens):
    """TinyMind's own greedy reply to MESSAGES (inference.generate, no server)."""
    from inference.generate import generate
    from inference.prompt import build_prompt
    from inference.load import load_for_inference
    loaded = load_for_inference(ckpt=out / "full_sft_64.pth")
    ids = generate(loaded.model, [build_prompt(loaded.tokenizer, MESSAGES)], max_new_tokens=max_tokens,
                   stop_ids=loaded.tokenizer.stop_ids)[0]
    return loaded.tokenizer.decode(ids), len(ids)


def test_models_and_answers_through_the_openai_client(server):
    url, out = server
    c = client(url)
    assert sorted(m.id for m in c.models.list().data) == ["full_sft_64", "full_sft_64+lora_x_64", "long_64",
                                                          "other_64", "other_64+lora_x_64"]
    on_other = c.chat.completions.create(model="other_64+lora_x_64", messages=MESSAGES, max_tokens=3)
    assert on_other.usage.completion_tokens >= 1                       # listed, so it loads
    r = c.chat.completions.create(model="full_sft_64", messages=MESSAGES, max_tokens=12, temperature=0)
    text, n = ours(out, 12)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == n and r.usage.prompt_tokens > 5 and r.object == "chat.completion"
    assert r.choices[0].finish_reason == ("length" if n == 12 else "stop")
    other = c.chat.completions.create(model="full_sft_64+lora_x_64", messages=MESSAGES, max_tokens=12, temperature=0)
    assert other.choices[0].message.content != text                     # the adapter changes the answer
    pieces, finish, usage = [], None, None
    for ch in c.chat.completions.create(model="full_sft_64", messages=MESSAGES, max_tokens=12, temperature=0,
                                        stream=True, stream_options={"include_usage": True}):
        if ch.choices:
            pieces.append(ch.choices[0].delta.content or "")
            finish = ch.choices[0].finish_reason or finish
        usage = ch.usage or usage
    assert "".join(pieces) == text and finish == r.choices[0].finish_reason and usage.completion_tokens == n
    # a stop string ends the reply before it (and is not sent)
    cut = text[len(text) // 2:len(text) // 2 + 3]
    s = c.chat.completions.create(model="full_sft_64", messages=MESSAGES, max_tokens=12, temperature=0, stop=[cut])
    assert s.choices[0].message.content == text[:text.index(cut)] and s.choices[0].finish_reason == "stop"


def test_raw_server_sent_events_with_httpx(server):
    url, _ = server
    body = {"model": "full_sft_64", "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and chunks[-1]["choices"][0]["finish_reason"]


def test_concurrent_requests_give_what_each_gives_alone(server):
    url, _ = server
    c = client(url)
    asks = [[{"role": "user", "content": f"question {i} " * (1 + i % 5)}] for i in range(8)]

    def ask(m):
        return c.chat.completions.create(model="full_sft_64", messages=m, max_tokens=10 + len(m[0]["content"]) % 7,
                                         temperature=0).choices[0].message.content
    alone = [ask(m) for m in asks]
    with cf.ThreadPoolExecutor(8) as ex:
        together = list(ex.map(ask, asks))
    assert together == alone and len(set(alone)) > 1


def test_bad_requests_get_openai_shaped_errors(server):
    url, _ = server
    c = client(url)
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="nope", messages=MESSAGES)
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    for kwargs, param in (({"temperature": 5}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                          ({"messages": []}, "messages"), ({"n": 2}, "n"), ({"stop": ["a"] * 5}, "stop")):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(**{"model": "full_sft_64", "messages": MESSAGES, **kwargs})
        assert e.value.status_code == 400 and e.value.body["param"] == param, kwargs
    long = [{"role": "user", "content": "piano " * 300}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="full_sft_64", messages=long)
    assert e.value.code == "context_length_exceeded" and "window is" in e.value.body["message"]
    r = httpx.post(f"{url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{url}/nothing/here")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Not Found"
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="full_sft_64", messages=MESSAGES, stream_options="yes")
    assert e.value.body["param"] == "stream_options"


def test_a_client_that_leaves_mid_stream_takes_its_row_out(server):
    url, _ = server
    body = {"model": "long_64", "messages": MESSAGES, "max_tokens": 30000, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        next(lines), next(lines)                                          # two events, then hang up
        assert httpx.get(f"{url[:-3]}/health").json()["models"]["long_64"]["live"] == 1
    t0 = time.time()
    while httpx.get(f"{url[:-3]}/health").json()["models"]["long_64"]["live"] and time.time() - t0 < 10:
        time.sleep(0.05)
    # 30,000 tokens take far longer than 10 s: the row left when the client did
    assert httpx.get(f"{url[:-3]}/health").json()["models"]["long_64"]["live"] == 0
    r = client(url).chat.completions.create(model="long_64", messages=MESSAGES, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_an_api_key_is_required_when_given(tmp_path):
    make_checkpoint(tmp_path / "full_sft_64.pth")
    proc, url = start_server(tmp_path, "--api_key", "k")
    try:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").models.list()
        assert [m.id for m in client(url, "k").models.list().data] == ["full_sft_64"]
    finally:
        stop_server(proc)


def test_a_failing_step_fails_its_requests_and_the_model_serves_on(tmp_path, monkeypatch):
    """In process: a decoding step that raises gives the requests in flight an error (none waits forever),
    and the next request is answered."""
    import asyncio
    from serving.engine import Engine
    make_checkpoint(tmp_path / "full_sft_64.pth")
    engine = Engine(tmp_path, max_rows=4)
    worker = engine.worker("full_sft_64")
    real, calls = worker.batch.step, []

    def broken():
        calls.append(1)
        raise RuntimeError("out of memory")

    async def drain(req):
        items = [await asyncio.wait_for(req.queue.get(), 30)]
        while items[-1]["type"] == "text":
            items.append(await asyncio.wait_for(req.queue.get(), 30))
        return items[-1]
    loop = asyncio.new_event_loop()
    monkeypatch.setattr(worker.batch, "step", broken)
    first = engine.submit(worker, [5, 6, 7], 5, {"temperature": 0.0}, [], loop)
    assert loop.run_until_complete(drain(first)) == {"type": "error", "message": "RuntimeError: out of memory"}
    assert calls and worker.batch.step != broken and real      # a fresh batch replaced the broken one
    second = engine.submit(worker, [5, 6, 7], 5, {"temperature": 0.0}, [], loop)
    end = loop.run_until_complete(drain(second))
    assert end["type"] == "end" and end["completion_tokens"] >= 1


def test_the_chat_engine_builds_the_prompt_persona_documents_and_window(tmp_path):
    """--persona and --docs: a request without a system message gets the persona's, the passages retrieved
    for it come back in "sources", and a conversation longer than the window loses its oldest exchanges
    (through chat/engine.py, as eval_model.py and the web demo) instead of being refused."""
    from chat.engine import ChatEngine
    from chat.persona import load_persona
    from chat.retrieval import open_index
    from evaluation.answer_tests import answer_prompts
    from inference.load import load_for_inference
    out, docs = tmp_path / "out", tmp_path / "docs"
    make_checkpoint(out / "full_sft_64.pth", std=0.2, max_position_embeddings=1024)
    docs.mkdir()
    (docs / "notes.md").write_text("The oboe is a double-reed woodwind instrument.\n", encoding="utf-8")
    proc, url = start_server(out, "--persona", "music_tutor", "--docs", str(docs), "--docs_k", "2")
    try:
        c = client(url)
        question = [{"role": "user", "content": "What is an oboe?"}]
        r = c.chat.completions.create(model="full_sft_64", messages=question, max_tokens=6, temperature=0)
        assert r.model_extra["sources"][0]["source"] == "notes.md"
        loaded = load_for_inference(ckpt=out / "full_sft_64.pth")
        engine = ChatEngine(loaded, load_persona("music_tutor"), index=open_index(docs, out), docs_k=2)
        sampling = {"max_new_tokens": 6, "temperature": 0.0}
        want = answer_prompts(loaded, [engine.prepare([], "What is an oboe?", 6).ids], sampling)[0]
        assert r.choices[0].message.content.strip() == want
        long = [m for i in range(40) for m in ({"role": "user", "content": f"question {i} " + "piano " * 20},
                                                {"role": "assistant", "content": "an answer " * 10})]
        r = c.chat.completions.create(model="full_sft_64", messages=long + question, max_tokens=6, temperature=0)
        turn = engine.prepare(long, "What is an oboe?", 6)
        assert turn.dropped > 0 and r.usage.prompt_tokens == len(turn.ids) <= 1024
    finally:
        stop_server(proc)
