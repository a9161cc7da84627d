"""routellm label: LLM-judge battles, with fake chat models (unit) and the SmolLM2 server (slow+server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from shared_core.errors import ConfigError
from shared_core.labeling import (
    BATTLES_FILE,
    CALLS_FILE,
    UNPARSED_FILE,
    ChatReply,
    Prices,
    ProviderError,
    estimate_cost,
    is_retryable,
    label_prompts,
    parse_grade,
    parse_verdict,
)
from shared_core.labeling.judge import grade_problem, pairwise_winner, verdict_problem
from shared_core.labeling.run import Journal, prompt_key

ROOT = Path(__file__).resolve().parents[2]


class FakeChat:
    """A chat model that answers with ``reply(messages)`` and records every call."""

    def __init__(self, name, reply, delay=0.0):
        self.name = name
        self.reply = reply
        self.delay = delay
        self.calls = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, messages):
        with self._lock:
            self.calls.append(messages)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.reply(messages)
        finally:
            with self._lock:
                self.in_flight -= 1


def answerer(tag):
    return lambda messages: ChatReply(f"{tag} answer to: {messages[-1]['content']}", 10, 5)


def fair_judge(messages):
    """Prefers the answer written by the strong model, wherever it is shown."""
    text = messages[-1]["content"]
    a_part = text.split("[Assistant B's answer]")[0]
    return "Reasoning... [[A]]" if "STRONG answer" in a_part else "Reasoning... [[B]]"


def models(judge=fair_judge, delay=0.0):
    return FakeChat("big", answerer("STRONG"), delay), FakeChat("small", answerer("weak"), delay), FakeChat("judge", judge, delay)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


PROMPTS = ["What is 2+2?", "Write a haiku about rain.", "Prove that sqrt(2) is irrational.", "Hi"]


def test_pairwise_battles_train_format(tmp_path):
    from shared_core.training.data import read_training_data

    strong, weak, judge = models()
    summary = label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    assert (summary.labelled, summary.unparsed, summary.failed) == (4, 0, [])
    assert summary.usage.total_calls == 4 * 4  # strong, weak, two judge orders
    battles = read_training_data([tmp_path / BATTLES_FILE], "battles")
    assert sorted(battles["prompt"]) == sorted(PROMPTS)
    assert set(battles["model_a"]) == {"big"} and set(battles["model_b"]) == {"small"}
    assert set(battles["winner"]) == {"model_a"}
    # the judge saw the strong answer first once and second once for every prompt
    judged = [m[-1]["content"] for m in judge.calls]
    firsts = [t.split("[Assistant B's answer]")[0] for t in judged]
    assert sum("STRONG answer" in f for f in firsts) == 4


def test_position_bias_becomes_a_tie(tmp_path):
    strong, weak, judge = models(judge=lambda m: "[[A]]")
    label_prompts(PROMPTS[:2], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    assert [b["winner"] for b in read_jsonl(tmp_path / BATTLES_FILE)] == ["tie", "tie"]
    assert [b["verdicts"] for b in read_jsonl(tmp_path / BATTLES_FILE)] == [["A", "A"], ["A", "A"]]


def test_pairwise_winner_table():
    assert pairwise_winner("A", "B") == "model_a"
    assert pairwise_winner("B", "A") == "model_b"
    assert pairwise_winner("A", "A") == "tie"
    assert pairwise_winner("C", "B") == "tie"


def test_verdict_parsing():
    assert parse_verdict("so [[B]]") == "B"
    assert parse_verdict("[[ A ]] final: [[A]]") == "A"
    assert parse_verdict("[[A]] or maybe [[B]]") is None
    assert parse_verdict("A is better") is None
    assert parse_grade("grade: [[4]]") == 4
    assert parse_grade("[[4.0]]") == 4
    assert parse_grade("[[6]]") is None
    assert parse_grade("[[2]] ... [[5]]") is None


#: SmolLM2-135M-Instruct's answers as judge (scripts/llama_server.sh, the slow test's prompts, greedy):
#: it repeats the prompt's template or answers the question itself; none holds a verdict.
SMOLLM2_JUDGE_ANSWERS = [
    "[User question]\nWhat is the capital of France?\n\nThe answer to this question would be Paris.",
    "The sea is a vast and mysterious realm that exists beneath the waves, where countless creatures and "
    "wonders blend together to create an unending tapestry of life.",
    "[User question]\nWhat is 3 times 4?",
    "A: 3 times 4 is 12.\nB: 3 times 4 equals 12, which is the answer you requested.",
]


def test_why_a_judge_answer_is_unparsed():
    for answer in SMOLLM2_JUDGE_ANSWERS:
        assert parse_verdict(answer) is None and parse_grade(answer) is None
        assert verdict_problem(answer) == "no [[A]], [[B]] or [[C]] verdict in the answer"
        assert grade_problem(answer) == "no [[1]]..[[5]] grade in the answer"
    assert verdict_problem("End with [[A]], [[B]] or [[C]]. [[B]]") == (
        "3 different [[A]], [[B]] or [[C]] verdicts in one answer: [[A]], [[B]], [[C]]")
    assert grade_problem("[[2]] ... [[5]]") == "2 different [[1]]..[[5]] grades in one answer: [[2]], [[5]]"
    assert verdict_problem("so [[B]]") is None and grade_problem("[[4.0]]") is None


def test_unparsed_judge_answers_are_kept_not_labelled(tmp_path):
    def judge(messages):
        return "I cannot decide." if "haiku" in messages[-1]["content"] else fair_judge(messages)

    strong, weak, judge_model = models(judge=judge)
    summary = label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge_model, output_dir=tmp_path, progress=False)
    assert (summary.labelled, summary.unparsed) == (3, 1)
    unparsed = read_jsonl(tmp_path / UNPARSED_FILE)
    assert len(unparsed) == 1
    assert unparsed[0]["status"] == "unparsed"
    assert unparsed[0]["prompt"] == PROMPTS[1]
    assert unparsed[0]["judge_answers"] == ["I cannot decide.", "I cannot decide."]
    assert unparsed[0]["problems"] == ["no [[A]], [[B]] or [[C]] verdict in the answer"] * 2
    assert PROMPTS[1] not in [b["prompt"] for b in read_jsonl(tmp_path / BATTLES_FILE)]
    # a resumed run does not ask again about the unparsed prompt
    again = label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge_model, output_dir=tmp_path, progress=False)
    assert again.already_done == 4 and again.usage.total_calls == 0


def test_grade_mode(tmp_path):
    def judge(messages):
        return "[[5]]" if "2+2" in messages[-1]["content"] else "[[2]]"

    strong, weak, judge_model = models(judge=judge)
    label_prompts(PROMPTS[:2], strong=strong, weak=weak, judge=judge_model, output_dir=tmp_path, mode="grade",
                  progress=False)
    battles = {b["prompt"]: b for b in read_jsonl(tmp_path / BATTLES_FILE)}
    assert battles["What is 2+2?"]["winner"] == "model_b" and battles["What is 2+2?"]["grade"] == 5
    assert battles["Write a haiku about rain."]["winner"] == "model_a"
    assert len(judge_model.calls) == 2  # one grade per prompt
    assert "[Reference answer]\nSTRONG answer" in judge_model.calls[0][-1]["content"]


def test_retries_with_backoff_then_success(tmp_path):
    failures = {"n": 0}

    def flaky(messages):
        if failures["n"] < 2:
            failures["n"] += 1
            raise ProviderError("HTTP 429 rate limited", retryable=True, status=429)
        return "STRONG answer"

    sleeps = []
    strong, weak, judge = FakeChat("big", flaky), FakeChat("small", answerer("weak")), FakeChat("j", fair_judge)
    summary = label_prompts(PROMPTS[:1], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, backoff=1.0,
                            sleep=sleeps.append, progress=False)
    assert summary.labelled == 1
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.5 and 1.0 <= sleeps[1] <= 3.0  # exponential, with jitter


def test_non_retryable_error_fails_that_prompt_only_and_resume_retries_it(tmp_path):
    def picky(messages):
        if "haiku" in messages[-1]["content"]:
            raise ProviderError("HTTP 400 bad request", retryable=False, status=400)
        return "STRONG answer"

    sleeps = []
    strong, weak, judge = FakeChat("big", picky), FakeChat("small", answerer("weak")), FakeChat("j", fair_judge)
    summary = label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, sleep=sleeps.append,
                            progress=False)
    assert summary.labelled == 3
    assert [i for i, _ in summary.failed] == [1]
    assert "HTTP 400" in summary.failed[0][1]
    assert sleeps == []  # not retried
    good = FakeChat("big", answerer("STRONG"))
    again = label_prompts(PROMPTS, strong=good, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    assert (again.already_done, again.labelled) == (3, 1)
    assert len(good.calls) == 1


def test_too_many_failures_stop_the_run(tmp_path):
    def down(messages):
        raise ProviderError("HTTP 401 unauthorized", retryable=False, status=401)

    prompts = [f"question {i}" for i in range(30)]
    strong, weak, judge = FakeChat("big", down), FakeChat("small", answerer("w")), FakeChat("j", fair_judge)
    summary = label_prompts(prompts, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, max_failures=3,
                            concurrency=1, progress=False)
    assert summary.stopped_early
    assert len(summary.failed) == 4
    assert len(strong.calls) < 30


def test_is_retryable_by_status_and_kind():
    class FakeStatusError(Exception):
        def __init__(self, status):
            self.status_code = status

    assert is_retryable(FakeStatusError(429)) and is_retryable(FakeStatusError(503))
    assert not is_retryable(FakeStatusError(401))
    assert is_retryable(TimeoutError()) and is_retryable(ConnectionResetError())
    assert not is_retryable(ValueError("bad"))


def test_concurrency_is_bounded(tmp_path):
    strong, weak, judge = models(delay=0.02)
    prompts = [f"question {i}" for i in range(12)]
    label_prompts(prompts, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, concurrency=3, progress=False)
    total = [m.max_in_flight for m in (strong, weak, judge)]
    assert max(total) <= 3
    assert strong.max_in_flight >= 2  # prompts did run side by side


def test_finished_calls_are_reused_after_an_interruption(tmp_path):
    strong, weak, judge = models()
    label_prompts(PROMPTS[:1], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    # simulate a kill after the answers and one judge call of a second prompt
    key = prompt_key(PROMPTS[1])
    calls = Journal(tmp_path / CALLS_FILE)
    calls.append({"prompt_sha": key, "step": "strong", "model": "big", "text": "STRONG answer (old)",
                  "prompt_tokens": 1, "completion_tokens": 1})
    calls.append({"prompt_sha": key, "step": "weak", "model": "small", "text": "weak answer (old)",
                  "prompt_tokens": 1, "completion_tokens": 1})
    with (tmp_path / CALLS_FILE).open("a") as fh:
        fh.write('{"prompt_sha": "cut sh')  # a line the kill cut short
    strong2, weak2, judge2 = models()
    summary = label_prompts(PROMPTS[:2], strong=strong2, weak=weak2, judge=judge2, output_dir=tmp_path,
                            progress=False)
    assert summary.already_done == 1 and summary.labelled == 1
    assert strong2.calls == [] and weak2.calls == []  # answers came from the journal
    assert len(judge2.calls) == 2
    assert "STRONG answer (old)" in judge2.calls[0][-1]["content"]
    assert (tmp_path / CALLS_FILE).read_text().endswith("\n")


def test_resume_with_other_models_is_refused(tmp_path):
    strong, weak, judge = models()
    label_prompts(PROMPTS[:1], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    other = FakeChat("other-judge", fair_judge)
    with pytest.raises(ConfigError, match="other settings"):
        label_prompts(PROMPTS, strong=strong, weak=weak, judge=other, output_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, mode="grade",
                      progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "elo"}, "mode must be one of"),
        ({"concurrency": 0}, "concurrency must be an integer >= 1"),
        ({"weak_name": "big"}, "both named 'big'"),
        ({"weak_wins_at": 6}, "grade from 1 to 5"),
    ],
)
def test_bad_settings_fail_before_any_call(tmp_path, kwargs, match):
    strong, weak, judge = models()
    with pytest.raises(ConfigError, match=match):
        label_prompts(PROMPTS, strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False, **kwargs)
    assert strong.calls == []


def test_bad_prompts_are_named(tmp_path):
    strong, weak, judge = models()
    with pytest.raises(ConfigError, match=r"prompts\[1\]"):
        label_prompts(["ok", ""], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)


def test_dry_run_cost_estimate(tmp_path):
    prices = Prices({"big": (10.0, 30.0), "small": (0.1, 0.2), "judge": (10.0, 30.0)})
    est = estimate_cost(["a" * 400, "b" * 40], strong_name="big", weak_name="small", judge_name="judge",
                        answer_tokens=100, judge_tokens=50, prices=prices)
    rows = {r["role"]: r for r in est.rows}
    # 100 + 10 tokens of prompt text, 4 of message overhead each
    assert rows["strong"] == {"model": "big", "role": "strong", "calls": 2, "input_tokens": 118,
                              "output_tokens": 200, "dollars": pytest.approx((118 * 10 + 200 * 30) / 1e6, abs=1e-12)}
    assert rows["judge"]["calls"] == 4 and rows["judge"]["output_tokens"] == 200
    assert rows["judge"]["input_tokens"] > 4 * 200  # two answers of 100 tokens each per judge call
    assert est.dollars == pytest.approx(sum(r["dollars"] for r in est.rows), abs=1e-12)
    assert "total: $" in est.format()
    unknown = estimate_cost(["q"], strong_name="big", weak_name="x", judge_name="judge", prices=prices)
    assert unknown.dollars is None and "unknown" in unknown.format()


def test_dry_run_skips_finished_prompts(tmp_path):
    strong, weak, judge = models()
    label_prompts(PROMPTS[:2], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, progress=False)
    est = estimate_cost(PROMPTS, strong_name="big", weak_name="small", judge_name="judge", output_dir=tmp_path)
    assert est.prompts == 2


def test_price_table_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o": {"input": 2.5, "output": 10}}))
    assert Prices.from_json(path).cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5, abs=1e-9)
    path.write_text(json.dumps({"gpt-4o": {"input": 2.5}}))
    with pytest.raises(ConfigError, match="gpt-4o"):
        Prices.from_json(path)
    with pytest.raises(ConfigError, match="dollars per million"):
        Prices({"m": (-1.0, 2.0)})


def test_cli_dry_run(tmp_path, capsys):
    from shared_core.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("What is 2+2?\nName three colours.\n")
    code = main([
        "label", str(prompts), "-o", str(tmp_path / "run"), "--dry-run",
        "--strong-model", "gpt-4o", "--weak-model", "llama", "--judge-model", "gpt-4o",
        "--price", "gpt-4o=2.5,10", "--price", "llama=0,0", "--max-tokens", "100", "--judge-max-tokens", "50",
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "dry run: 2 prompt(s)" in out and "total: $" in out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_cli_rejects_bad_price(tmp_path, capsys):
    from shared_core.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("q\n")
    code = main(["label", str(prompts), "-o", str(tmp_path / "r"), "--dry-run", "--strong-model", "a",
                 "--weak-model", "b", "--judge-model", "c", "--price", "a=cheap"])
    assert code == 2
    assert "MODEL=INPUT,OUTPUT" in capsys.readouterr().err


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from shared_core.labeling import label_prompts

    out, log = sys.argv[1], sys.argv[2]

    class Slow:
        def __init__(self, name, text):
            self.name, self.text = name, text
        def __call__(self, messages):
            with open(log, "a") as fh:
                fh.write(messages[-1]["content"][:40].replace("\\n", " ") + "\\n")
            time.sleep(0.05)
            return self.text

    prompts = [f"question number {i}" for i in range(40)]
    label_prompts(prompts, strong=Slow("big", "STRONG answer"), weak=Slow("small", "weak answer"),
                  judge=Slow("judge", "[[C]]"), output_dir=out, concurrency=2, progress=False)
    """
)


def test_kill_mid_run_then_resume_repeats_no_finished_prompt(tmp_path):
    out, log = tmp_path / "run", tmp_path / "calls.log"
    script = tmp_path / "label.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(log)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            battles = out / BATTLES_FILE
            if battles.is_file() and len(battles.read_text().splitlines()) >= 5:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the labelling subprocess wrote no battles within 60 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done_before = {b["prompt"] for b in read_jsonl(out / BATTLES_FILE)}
    assert 5 <= len(done_before) < 40, "the kill came too late to test a resume"
    calls_before = {(c["prompt_sha"], c["step"]) for c in Journal(out / CALLS_FILE).read()}

    strong, weak, judge = FakeChat("big", answerer("STRONG")), FakeChat("small", answerer("w")), FakeChat(
        "judge", lambda m: "[[C]]")
    prompts = [f"question number {i}" for i in range(40)]
    summary = label_prompts(prompts, strong=strong, weak=weak, judge=judge, output_dir=out, concurrency=2,
                            progress=False)
    assert summary.already_done == len(done_before)
    asked = {m[-1]["content"] for m in strong.calls + weak.calls}
    assert not asked & done_before  # no finished prompt asked again
    resumed_steps = {(c["prompt_sha"], c["step"]) for c in Journal(out / CALLS_FILE).read()} - calls_before
    assert len(resumed_steps) == summary.usage.total_calls  # every new call is a step not made before
    final = read_jsonl(out / BATTLES_FILE)
    assert sorted(b["prompt"] for b in final) == sorted(prompts)  # each prompt exactly once


# Real model ---------------------------------------------------------------------------
#: llama.cpp's (llama-cpp-python server's) response_format: a JSON object whose one field is a pairwise verdict.
LLAMA_CPP_VERDICT_FORMAT = {"type": "json_object", "schema": {
    "type": "object", "properties": {"verdict": {"enum": ["[[A]]", "[[B]]", "[[C]]"]}}, "required": ["verdict"]}}


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_label_with_smollm2_server_then_train(tmp_path, capsys):
    """SmolLM2 as strong, weak and judge through the CLI, then `routellm train` on its battles."""
    from shared_core.cli import main

    url = os.environ.get("ROUTELLM_TEST_SERVER_URL")
    if not url:
        pytest.skip("ROUTELLM_TEST_SERVER_URL is not set (scripts/test.sh starts the server)")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nWrite one sentence about the sea.\nWhat is 3 times 4?\n"
                       "Name a primary colour.\n")
    run_dir = tmp_path / "labels"
    args = ["label", str(prompts), "-o", str(run_dir), "--no-progress", "--concurrency", "1",
            "--max-tokens", "48", "--judge-max-tokens", "32", "--strong-name", "smollm2-as-strong",
            "--weak-name", "smollm2-as-weak"]
    for role in ("strong", "weak", "judge"):
        args += [f"--{role}-url", url, f"--{role}-model", "smollm2-135m-instruct"]
    args += ["--judge-extra-body", json.dumps({"response_format": LLAMA_CPP_VERDICT_FORMAT})]
    code = main(args + ["--limit", "2"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and first["calls"] == 8
    code = main(args)  # resume: only the two new prompts are asked
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and second["already_done"] == 2 and second["calls"] == 8
    battles = read_jsonl(run_dir / BATTLES_FILE) if (run_dir / BATTLES_FILE).is_file() else []
    unparsed = read_jsonl(run_dir / UNPARSED_FILE) if (run_dir / UNPARSED_FILE).is_file() else []
    # Unconstrained, SmolLM2-135M writes no verdict (it repeats the judge prompt's template or answers the
    # question: SMOLLM2_JUDGE_ANSWERS); constrained by llama.cpp's response_format to a verdict, it gives one for
    # every prompt. Strong and weak are the same greedy model here, so their answers are the same and the
    # verdicts mostly ties: poor labels, but the pipeline runs end to end.
    assert len(battles) == 4 and not unparsed
    assert all(b["mode"] == "pairwise" and len(b["verdicts"]) == 2 for b in battles)
    code = main(["train", "sw_ranking", "--data", str(run_dir / BATTLES_FILE), "--strong", "smollm2-as-strong",
                 "--weak", "smollm2-as-weak", "-o", str(tmp_path / "router"), "--no-progress"])
    assert code == 0
    code = main(["route", "--router", str(tmp_path / "router"), "--threshold", "0.5", "What is 3 times 4?"])
    assert code == 0 and "router=sw_ranking" in capsys.readouterr().out


def test_label_output_trains_with_routellm_train(tmp_path, capsys):
    """battles.jsonl as written goes straight into `routellm train` (the shipped ONNX embedder, offline)."""
    from shared_core.cli import main

    def judge(messages):  # strong wins on questions, weak on the rest; ties where it cannot tell
        text = messages[-1]["content"]
        if "?" not in text.split("[Assistant A")[0]:
            return "[[C]]"
        return fair_judge(messages)

    strong, weak, judge_model = FakeChat("big", answerer("STRONG")), FakeChat("small", answerer("weak")), FakeChat(
        "judge", judge)
    prompts = [f"What is {i} plus {i}?" for i in range(6)] + [f"Write a line about topic {i}." for i in range(6)]
    label_prompts(prompts, strong=strong, weak=weak, judge=judge_model, output_dir=tmp_path / "labels",
                  progress=False)
    code = main(["train", "sw_ranking", "--data", str(tmp_path / "labels" / BATTLES_FILE), "--strong", "big",
                 "--weak", "small", "-o", str(tmp_path / "router"), "--no-progress", "--no-cache"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["battles"] == 12
    code = main(["route", "--router", str(tmp_path / "router"), "--threshold", "0.5", "What is 9 plus 9?"])
    assert code == 0 and "router=sw_ranking" in capsys.readouterr().out


def test_langchain_chat_models_label(tmp_path):
    """Any LangChain chat model works through langchain_routellm.labeling (fake ones here)."""
    pytest.importorskip("langchain_core")
    import doctest

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    import langchain_routellm.labeling as lc_labeling

    assert doctest.testmod(lc_labeling).failed == 0
    strong = lc_labeling.from_langchain(FakeListChatModel(responses=["STRONG answer"]), name="big")
    weak = lc_labeling.from_langchain(FakeListChatModel(responses=["weak answer"]), name="small")
    judge = lc_labeling.from_langchain(FakeListChatModel(responses=["[[A]]", "[[B]]"]), name="judge")
    summary = label_prompts(["q1"], strong=strong, weak=weak, judge=judge, output_dir=tmp_path, concurrency=1,
                            progress=False)
    assert summary.labelled == 1
    assert read_jsonl(tmp_path / BATTLES_FILE)[0]["winner"] == "model_a"  # A first, then B: strong both times
    with pytest.raises(ConfigError, match="LangChain chat model"):
        lc_labeling.from_langchain(lambda m: "x")


def test_openai_chat_sends_extra_body_and_refuses_its_own_fields(monkeypatch):
    import httpx

    from shared_core.errors import ConfigError
    from shared_core.labeling.chat import OpenAIChat

    sent = {}

    def post(url, json, headers, timeout):
        sent.update(url=url, body=json)
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"verdict": "[[B]]"}'}}],
                                         "usage": {"prompt_tokens": 5, "completion_tokens": 3}})

    monkeypatch.setattr(httpx, "post", post)
    fmt = {"type": "json_object", "schema": {"type": "object"}}
    reply = OpenAIChat("http://127.0.0.1:1/v1", "judge", extra_body={"response_format": fmt})([{"role": "user", "content": "q"}])
    assert sent["body"]["response_format"] == fmt and sent["body"]["model"] == "judge"
    assert reply.text == '{"verdict": "[[B]]"}'
    with pytest.raises(ConfigError, match=r"may not set \['messages', 'model'\]"):
        OpenAIChat("http://127.0.0.1:1/v1", "judge", extra_body={"model": "other", "messages": []})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        OpenAIChat("http://127.0.0.1:1/v1", "judge", extra_body=["response_format"])


def test_cli_rejects_judge_extra_body_that_is_not_an_object(tmp_path, capsys):
    from shared_core.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("q\n")
    for bad in ("not json", "[1, 2]"):
        code = main(["label", str(prompts), "-o", str(tmp_path / "r"), "--strong-model", "a", "--weak-model", "b",
                     "--judge-model", "c", "--strong-url", "http://127.0.0.1:1/v1", "--weak-url", "http://127.0.0.1:1/v1",
                     "--judge-url", "http://127.0.0.1:1/v1", "--judge-extra-body", bad])
        assert code == 2 and "--judge-extra-body must be a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
