"""Every example in shared_core's docstrings runs and prints what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import shared_core

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(shared_core.__path__, "shared_core.") if not m.name.endswith(".cli")
)


def test_some_modules_have_examples():
    finder = doctest.DocTestFinder()
    with_examples = [
        name for name in MODULES if any(t.examples for t in finder.find(importlib.import_module(name)))
    ]
    assert {"shared_core.routers.mf", "shared_core.routers.sw_ranking", "shared_core.routers.knn"} <= set(with_examples)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
