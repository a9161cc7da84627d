"""shared_core.stream_usage: what counts as an endpoint's refusal of stream_options, and the
weak registry of the models that refused it."""

from __future__ import annotations

import gc

from pydantic import BaseModel

from shared_core.stream_usage import Refusals, refuses_stream_options


class Model(BaseModel):  # as a framework's chat model: a pydantic object, not hashable
    name: str


def test_a_refusal_is_a_bad_request_naming_the_field():
    assert refuses_stream_options(400, "Unrecognized request argument supplied: stream_options")
    assert refuses_stream_options(422, "body -> stream_options: extra fields not permitted")
    assert not refuses_stream_options(400, "max_tokens is too large")
    assert not refuses_stream_options(500, "stream_options broke the server")
    assert not refuses_stream_options(None, "stream_options")


def test_refusals_hold_models_weakly_and_by_identity():
    refusals = Refusals()
    a, b = Model(name="x"), Model(name="x")
    refusals.add(a)
    assert a in refusals and b not in refusals  # equal is not the same model
    del a
    gc.collect()
    assert not refusals._refs  # dropped with the model: an id used again is not taken for it
    assert b not in refusals
