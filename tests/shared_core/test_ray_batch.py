"""Batch routing on Ray Data, on a local Ray cluster the test starts (loopback):
the same decisions as the single-process path, in input order."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from shared_core.cli import main  # noqa: E402
from shared_core.engine import RoutingEngine  # noqa: E402
from shared_core.errors import ConfigError  # noqa: E402
from shared_core.ray_batch import decide_texts_on_ray  # noqa: E402

SUBJECTS = ["primes", "rain", "chess", "inflation", "TCP", "photosynthesis", "Bayes' theorem", "volcanoes"]
FORMS = ["Prove a theorem about {s} rigorously (case {n}).", "Say one word about {s} #{n}.",
         "Explain {s} to a child, version {n}.", "Write a limerick about {s} number {n}."]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def prompts(n):
    return [FORMS[i % 4].format(s=SUBJECTS[(i // 4) % len(SUBJECTS)], n=i) for i in range(n)]


def test_same_decisions_in_input_order(local_ray):
    texts = prompts(300)
    texts[7], texts[150] = "", "   "  # no text: not scored, sent to on_no_text as routellm route does
    expected = RoutingEngine.from_settings(strong_fraction=0.5, on_no_text="weak").decide([[("user", t)] for t in texts])
    got = decide_texts_on_ray(texts, strong_fraction=0.5, on_no_text="weak", batch_size=64, concurrency=2)
    assert [(d.role, d.reason) for d in got] == [(d.role, d.reason) for d in expected]
    assert got[7].score is None and got[150].score is None and got[7].role.value == "weak"
    scored = [i for i in range(len(texts)) if i not in (7, 150)]
    assert [got[i].score for i in scored] == pytest.approx([expected[i].score for i in scored], abs=1e-6)
    assert {d.threshold for d in got} == {expected[0].threshold} and got[0].router == expected[0].router
    assert 0 < sum(d.is_strong for d in got) < len(got)


def test_route_file_with_ray_writes_decisions_in_order(local_ray, tmp_path, capsys):
    texts = prompts(40)
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    out = tmp_path / "decisions.jsonl"
    assert main(["route", "--file", str(src), "--ray", "--out", str(out), "--router", "router-mf-0.5"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = RoutingEngine.from_settings(router="router-mf-0.5").decide([[("user", t)] for t in texts])
    assert [r["prompt"] for r in rows] == texts
    assert [r["role"] for r in rows] == [d.role.value for d in expected]
    assert [r["score"] for r in rows] == pytest.approx([d.score for d in expected], abs=1e-6)
    assert "40 decisions written to" in capsys.readouterr().out


def test_bad_arguments_fail_before_any_work():
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        decide_texts_on_ray(["hi"], batch_size=0)
    with pytest.raises(ConfigError, match="prompts must be a list of strings"):
        decide_texts_on_ray("hi")
