"""The ``routellm`` command: a thin layer over library functions.

Subcommands live next to the code they drive and register themselves here:
``route`` and ``calibrate`` (this module), ``train`` (shared_core.training.cli),
``evaluate`` (shared_core.evaluation.cli). Integration packages add commands
(``demo``) through the ``routellm.commands`` entry-point group, so shared_core
never imports them.
"""
