"""One default sampling for the chat (inference/sampling.py CHAT_SAMPLING), read by every surface a person chats
through: eval_model.py's flags, the web demo's sidebar, the API server's request parsing.

    pytest tests/test_sampling_defaults.py
"""
import pytest

import eval_model
import serving.body
from factories import REPO, make_checkpoint
from inference.sampling import CHAT_SAMPLING

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
SAMPLED = {"temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}     # another home, to follow


@pytest.fixture(params=["shipped", "changed"])
def home(request, monkeypatch):
    """The chat default each surface must give: the shipped one, or another put in its place (each surface
    must read the one home, not hold a copy of its values)."""
    if request.param == "shipped":
        return dict(CHAT_SAMPLING)
    # the home itself (the web demo's page imports it afresh on every run) and the modules that imported it
    for module in ("inference.sampling", "eval_model", "serving.body"):
        monkeypatch.setattr(f"{module}.CHAT_SAMPLING", dict(SAMPLED))
    return dict(SAMPLED)


def test_the_chat_default_is_greedy():
    """README.txt's and docs/' answers were made greedily, and the tests score greedy answers: the chat, by
    default, gives the same ones."""
    assert dict(CHAT_SAMPLING) == GREEDY
    with pytest.raises(TypeError):
        CHAT_SAMPLING["temperature"] = 1.0          # read-only: nobody changes it for everyone by accident


def test_eval_model_chats_with_it(home):
    s = eval_model.sampling(eval_model.parse_args([]))
    assert {k: s[k] for k in home} == home
    tests = eval_model.sampling(eval_model.parse_args([]), test=True)
    assert tests["temperature"] == 0.0                          # the tests stay greedy whatever the chat's default
    given = eval_model.sampling(eval_model.parse_args(["--temperature", "0.5", "--top_p", "0.8"]))
    assert (given["temperature"], given["top_p"], given["top_k"]) == (0.5, 0.8, home["top_k"])


def test_the_server_gives_it_to_a_request_without_sampling(home):
    asked = serving.body.check_body({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, 2048)
    assert {k: asked.sampling[k] for k in home} == home and asked.sampling["seed"] is None
    asked = serving.body.check_body({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                     "temperature": 1.0}, 2048)     # OpenAI's default, given: kept
    assert (asked.sampling["temperature"], asked.sampling["top_p"]) == (1.0, home["top_p"])
    with pytest.raises(serving.body.ApiError, match="temperature must be a number from 0.0 to 2.0"):
        serving.body.check_body({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                 "temperature": 2.5}, 2048)         # OpenAI's ranges still checked


def test_the_web_demo_sidebar_starts_at_it(home, monkeypatch, tmp_path):
    """The page as `streamlit run scripts/web_demo.py` shows it, on a tiny checkpoint (Streamlit's testing API,
    as tests/test_web_demo.py)."""
    pytest.importorskip("streamlit")
    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest
    make_checkpoint(tmp_path / "out" / "full_sft_64.pth")
    monkeypatch.setenv("TINYMIND_OUT_DIR", str(tmp_path / "out"))
    monkeypatch.chdir(REPO)                                     # its .streamlit/config.toml: the page serves
    st_config.get_config_options(force_reparse=True)
    try:
        at = AppTest.from_file(str(REPO / "scripts" / "web_demo.py"), default_timeout=60).run()
        assert not at.exception
        shown = {k: (at.sidebar.number_input if k == "top_k" else at.sidebar.slider)(key=k).value for k in home}
    finally:
        monkeypatch.undo()
        st_config.get_config_options(force_reparse=True)
    assert shown == pytest.approx(home)
