"""Judge prompts and the parsing of their verdicts.

Two ways to turn a strong and a weak answer into a battle:

* ``pairwise``: the judge sees both answers and names the better one (``[[A]]``,
  ``[[B]]``) or a tie (``[[C]]``); it is asked twice, once with the strong answer
  first and once with it second, and the battle is a win only when both orders
  agree. Disagreement (position bias) or a tie in either order is a tie.
* ``grade``: as RouteLLM labelled its augmentation data, the judge grades the weak
  answer from 1 to 5 with the strong answer as the reference; a grade of
  ``weak_wins_at`` (default 4) or more is a weak win, a lower one a strong win.

A judge answer without exactly one well-formed verdict is *unparsed*:
:func:`parse_verdict` and :func:`parse_grade` return ``None`` and the prompt is
kept aside, never turned into a label; :func:`verdict_problem` and
:func:`grade_problem` say why (no verdict at all, or verdicts that disagree).
Nothing else in the text is read as a verdict: a judge that answers the question
itself, or repeats the answers ("A: ..."), has given no verdict.
"""

from __future__ import annotations

import re

from shared_core.labeling.chat import Messages

MODES = ("pairwise", "grade")

PAIRWISE_SYSTEM = (
    "You compare two AI assistants' answers to the same user question. Judge which answer serves the "
    "user better: correctness first, then helpfulness, relevance and completeness. Do not let the order "
    "of the answers, their length or the assistants' names sway you. Explain briefly, then end with "
    "exactly one verdict: [[A]] if assistant A is better, [[B]] if assistant B is better, [[C]] for a tie."
)
PAIRWISE_USER = (
    "[User question]\n{question}\n\n"
    "[Assistant A's answer]\n{answer_a}\n[End of assistant A's answer]\n\n"
    "[Assistant B's answer]\n{answer_b}\n[End of assistant B's answer]\n\n"
    "End your reply with your verdict: [[A]], [[B]] or [[C]]."
)
GRADE_SYSTEM = (
    "You grade an AI assistant's answer to a user question on a scale from 1 to 5, using a reference "
    "answer from a stronger assistant as a guide to what a very good answer contains. 5: as good as the "
    "reference or better; 4: nearly as good, with minor gaps; 3: adequate but clearly weaker; 2: major "
    "errors or omissions; 1: wrong, unhelpful or off-topic. Explain briefly, then end with your grade "
    "in double brackets, for example [[3]]."
)
GRADE_USER = (
    "[User question]\n{question}\n\n"
    "[Reference answer]\n{reference}\n[End of reference answer]\n\n"
    "[Assistant's answer]\n{answer}\n[End of assistant's answer]\n\n"
    "End your reply with your grade: [[1]], [[2]], [[3]], [[4]] or [[5]]."
)

_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_GRADE = re.compile(r"\[\[\s*([1-5])(?:\.0+)?\s*\]\]")


def pairwise_messages(question: str, answer_a: str, answer_b: str) -> Messages:
    return [
        {"role": "system", "content": PAIRWISE_SYSTEM},
        {"role": "user", "content": PAIRWISE_USER.format(question=question, answer_a=answer_a, answer_b=answer_b)},
    ]


def grade_messages(question: str, reference: str, answer: str) -> Messages:
    return [
        {"role": "system", "content": GRADE_SYSTEM},
        {"role": "user", "content": GRADE_USER.format(question=question, reference=reference, answer=answer)},
    ]


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` (tie) when the text holds verdicts that all agree, else ``None``."""
    found = set(_VERDICT.findall(text or ""))
    return found.pop() if len(found) == 1 else None


def parse_grade(text: str) -> int | None:
    """The 1-5 grade when the text holds grades that all agree, else ``None``."""
    found = {int(g) for g in _GRADE.findall(text or "")}
    return found.pop() if len(found) == 1 else None


def verdict_problem(text: str) -> str | None:
    """Why :func:`parse_verdict` reads no verdict in ``text`` (``None`` when it reads one)."""
    return _problem(set(_VERDICT.findall(text or "")), "[[A]], [[B]] or [[C]] verdict")


def grade_problem(text: str) -> str | None:
    """Why :func:`parse_grade` reads no grade in ``text`` (``None`` when it reads one)."""
    return _problem({int(g) for g in _GRADE.findall(text or "")}, "[[1]]..[[5]] grade")


def _problem(found: set, what: str) -> str | None:
    if len(found) == 1:
        return None
    if not found:
        return f"no {what} in the answer"
    return f"{len(found)} different {what}s in one answer: " + ", ".join(f"[[{v}]]" for v in sorted(found))


def pairwise_winner(strong_first: str, strong_second: str) -> str:
    """Battle winner (``model_a`` = strong, ``model_b`` = weak) from the two orders' verdicts.

    ``strong_first`` is the verdict with the strong answer as A, ``strong_second`` with
    it as B. Both orders must prefer the same model for a win; anything else is a tie.
    """
    first = {"A": "strong", "B": "weak", "C": "tie"}[strong_first]
    second = {"A": "weak", "B": "strong", "C": "tie"}[strong_second]
    if first == second == "strong":
        return "model_a"
    if first == second == "weak":
        return "model_b"
    return "tie"


def grade_winner(grade: int, weak_wins_at: int = 4) -> str:
    """Battle winner from the weak answer's grade: ``model_b`` (weak) at ``weak_wins_at`` or more."""
    return "model_b" if grade >= weak_wins_at else "model_a"
