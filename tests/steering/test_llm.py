"""The LLM rewriter against a fake OpenAI-compatible server, failures included."""

import json

import numpy as np
import pytest

from steering import llm, search
from steering.proposers import Evaluated, LLMRewriter, Proposal, ProposerError
from tests.steering.fake_openai import API_KEY, FakeOpenAI


@pytest.fixture
def server():
    fake = FakeOpenAI()
    with fake.running():
        yield fake


def _config(server, **kw):
    return llm.ChatConfig(
        base_url=server.base_url,
        api_key=kw.pop("key", API_KEY),
        model="fake-model",
        timeout=kw.pop("timeout", 5.0),
        max_retries=kw.pop("max_retries", 2),
    )


def _propose(server, **kw):
    p = LLMRewriter(config=_config(server, **kw))
    p.start("a fox in the snow")
    return p.propose(
        history=[Evaluated("a fox in the snow", 0.1, 0.2)],
        n=3,
        rng=np.random.default_rng(0),
    )


def test_request_follows_the_documented_protocol(server):
    props = _propose(server)
    assert [p.prompt for p in props] == [
        "a fox, oil painting",
        "a fox, golden hour light",
    ]
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "fake-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["response_format"] == {"type": "json_object"}
    user = body["messages"][1]["content"]
    assert "Original prompt: a fox in the snow" in user
    assert "Nouns to keep: fox, snow" in user
    assert "+0.100  a fox in the snow" in user


def test_base_url_with_v1_is_not_doubled(server):
    cfg = _config(server)
    cfg.base_url = server.base_url + "/v1/"
    assert cfg.endpoint == server.base_url + "/v1/chat/completions"


def test_fenced_json_and_bare_list_are_accepted(server):
    server.reply = lambda body: '```json\n["a fox in the snow, watercolour"]\n```'
    assert [p.prompt for p in _propose(server)] == ["a fox in the snow, watercolour"]


@pytest.mark.parametrize("mode", ["429", "500", "503"])
def test_transient_errors_are_retried_then_succeed(server, mode):
    server.mode, server.fail_times = mode, 2
    props = _propose(server)
    assert len(props) == 2
    assert len(server.requests) == 3


def test_retry_after_is_honoured(server, monkeypatch):
    server.mode, server.fail_times, server.retry_after = "429", 1, "3"
    waits = []
    out = llm.chat_complete(
        config=_config(server),
        messages=[{"role": "user", "content": "x"}],
        sleep=waits.append,
    )
    assert json.loads(out)["prompts"]
    assert len(waits) == 1 and waits[0] >= 3.0


def test_persistent_5xx_gives_up_with_the_providers_message(server):
    server.mode = "503"
    with pytest.raises(ProposerError) as err:
        _propose(server, max_retries=1)
    assert "HTTP 503: The server had an error." in err.value.message
    assert "gave up after 2 tries" in err.value.message
    assert len(server.requests) == 2


def test_timeout(server):
    server.mode, server.delay = "timeout", 2.0
    with pytest.raises(ProposerError) as err:
        _propose(server, timeout=0.3, max_retries=0)
    assert "did not answer within 0.3 s" in err.value.message


def test_bad_key_is_not_retried(server):
    with pytest.raises(ProposerError) as err:
        _propose(server, key="wrong")
    assert "HTTP 401: Incorrect API key provided." in err.value.message
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("refusal", "The model refused: I can't help with that."),
        ("content_filter", "withheld by its content filter"),
        ("not_json", "the body is not JSON"),
        ("no_choices", "no choices[0].message"),
        ("empty", "empty message content"),
        ("prose", "Malformed answer: not JSON"),
    ],
)
def test_refusals_and_malformed_answers_fail_at_once(server, mode, message):
    server.mode = mode
    with pytest.raises(ProposerError) as err:
        _propose(server)
    assert message in err.value.message
    assert len(server.requests) == 1


def test_wrong_shape_json(server):
    server.reply = lambda body: json.dumps({"rewrites": ["x"]})
    with pytest.raises(ProposerError, match=r'expected \{"prompts"'):
        _propose(server)


def test_llm_in_the_search_guard_and_failure(server):
    """Rewrites that drop the fox are rejected; a later 503 ends the search with
    the reason, keeping the best found."""
    answers = iter(
        [
            {"prompts": ["a fox in the snow, oil painting", "a wolf in the snow"]},
            {"prompts": ["a fox in the snow, oil painting, dramatic"]},
        ]
    )
    server.reply = lambda body: json.dumps(next(answers))

    def evaluate(prompts, r):
        return [
            search.Outcome(
                personal=len(p) / 10,
                population=0.0,
                images=[p],
                image_personal=[len(p) / 10],
            )
            for p in prompts
        ]

    rounds = []
    proposer = LLMRewriter(config=_config(server, max_retries=0))
    result = search.search(
        base_prompt="a fox in the snow",
        proposer=proposer,
        evaluate=evaluate,
        rounds=3,
        per_round=4,
        max_images=20,
        on_round=rounds.append,
    )
    r1 = {c.prompt: c for c in rounds[1].candidates}
    assert r1["a wolf in the snow"].rejected == "drops the subject: fox"
    assert r1["a fox in the snow, oil painting"].outcome is not None
    assert result.best.prompt == "a fox in the snow, oil painting, dramatic"
    # Third call: the iterator is exhausted, the handler fails and drops the
    # connection (a transport error; no retries configured).
    assert result.stopped.startswith("LLM proposer:")


def test_not_configured(settings, monkeypatch):
    settings.STEERING_LLM_URL = ""
    monkeypatch.delenv("STEERING_LLM_URL", raising=False)
    with pytest.raises(llm.LLMError, match="set STEERING_LLM_URL"):
        llm.ChatConfig.from_settings()


def test_nul_and_control_characters_are_cleaned_from_answers(server):
    server.reply = lambda body: json.dumps(
        {"prompts": ["a fox\x00 in the\x1b deep snow", "a fox,\n\toil painting"]}
    )
    assert _propose(server) == [
        Proposal("a fox in the deep snow", "LLM rewrite"),
        Proposal("a fox, oil painting", "LLM rewrite"),
    ]


def test_an_overlong_prompt_is_dropped_and_the_rest_kept(server):
    server.reply = lambda body: json.dumps(
        {"prompts": ["a fox " * 40_000, "a fox, watercolour"]}
    )
    assert [p.prompt for p in _propose(server)] == ["a fox, watercolour"]
    server.reply = lambda body: json.dumps({"prompts": ["a fox " * 40_000]})
    with pytest.raises(ProposerError, match="no text of at most 2000 characters"):
        _propose(server)
