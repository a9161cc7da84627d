"""Cheap prompt features: what each counts, and the cap on the characters examined."""

import numpy as np
import pytest

from shared_core.features import FEATURE_NAMES, MAX_CHARS, prompt_features


def feature(prompt: str, name: str) -> float:
    return float(prompt_features([prompt])[0, FEATURE_NAMES.index(name)])


@pytest.mark.parametrize(
    ("name", "marked", "plain"),
    [
        ("log_code_markers", "```python\ndef f(x):\n    return x == 1\n```", "a walk in the park"),
        ("log_math_notation", "Solve x^2 + 3 = 12 and compute \\frac{1}{2}", "a walk in the park"),
        ("log_reasoning_words", "Prove it step by step and analyze the trade-offs", "a walk in the park"),
        ("log_technical_words", "a distributed database with low latency", "a walk in the park"),
        ("log_questions", "Why? How? When?", "a walk in the park"),
        ("log_chat_words", "hello! tell me a joke", "a walk in the park"),
        ("multiple_choice", "Pick one\nA. x\nB. y\nC. z\nD. w", "a walk in the park"),
    ],
)
def test_each_feature_counts_its_marker(name, marked, plain):
    assert feature(marked, name) > feature(plain, name)


def test_patterns_look_only_at_the_first_max_chars():
    tail = "```\ndef f(): return 1\n```"
    long_plain = "word " * (MAX_CHARS // 5 + 10)
    assert feature(long_plain + tail, "log_code_markers") == feature(long_plain, "log_code_markers") == 0.0
    # the length is the full length
    assert feature(long_plain + tail, "log_chars") == pytest.approx(np.log1p(len(long_plain + tail)))


def test_shape_and_values_are_finite():
    x = prompt_features(["", "hi", "x" * 100_000])
    assert x.shape == (3, len(FEATURE_NAMES)) and np.isfinite(x).all()
