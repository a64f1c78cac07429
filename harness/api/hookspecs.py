"""The hook specifications: few hooks, each registering named components whose classes carry the behaviour.

Every hook receives ``register``, a callable taking one component instance. A plugin module implements any subset of
these hooks with :data:`hookimpl`::

    from harness.api.hookspecs import hookimpl

    @hookimpl
    def harness_register_tasks(register):
        register(MyTask())

All hooks are called once per plugin each time a plugin host loads (:meth:`harness.api.host.PluginHost.load`: once
per command in the main process, and again in each cell's worker process); none is ``firstresult``: every
implementation runs, and what it registers is collected (return values are ignored; pluggy's ``tryfirst``,
``trylast`` and ``wrapper`` options have no effect). A plugin whose hook raises, or registers an instance of the
wrong base class, registers nothing at all (the host reports it as a problem). A name registered twice within one
kind, by two plugins, is a conflict: suites naming it are refused until one plugin is blocked. The reference with
examples: ``docs/hooks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from harness.api.components import Executor, ModelSource, Reporter, Strategy, Task

#: Version of the hook API. A plugin may declare ``HARNESS_API_VERSION = N``; the host refuses plugins with N newer.
#: 1: the first API. 2: :meth:`harness.api.components.Reporter.render` receives a :class:`harness.report.reporting.Report`
#: (its records are ``report.rows``) instead of the rows; reporters may write a directory (``output``, ``write``).
#: 3: the modules moved into sub-packages (:mod:`harness.api`, :mod:`harness.tasklib`, ...); API 2's module names
#: still import, with a DeprecationWarning (:mod:`harness._moved`), until API 4.
API_VERSION = 3

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
#: The marker plugin authors use on their hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_register_tasks(register: Callable[[Task], None]) -> None:
    """Register tasks (data, head or prompt formulation, metrics).

    :param register: call once per :class:`harness.api.components.Task` instance; its ``name`` is what suites write
        as ``type``. A name registered by two plugins is reported as a conflict.
    """


@hookspec
def harness_register_strategies(register: Callable[[Strategy], None]) -> None:
    """Register tuning strategies (full fine-tuning, adapters, prompt tuning, in-context learning, ...).

    :param register: call once per :class:`harness.api.components.Strategy` instance.
    """


@hookspec
def harness_register_model_sources(register: Callable[[ModelSource], None]) -> None:
    """Register model sources: where weights and tokenizers come from (hub, local folder, tiny random models).

    :param register: call once per :class:`harness.api.components.ModelSource` instance; suites pick one with
        ``source = "..."`` in a ``[models.NAME]`` table.
    """


@hookspec
def harness_register_executors(register: Callable[[Executor], None]) -> None:
    """Register executors: how cells run (local processes; cluster engines such as Ray or Slurm).

    :param register: call once per :class:`harness.api.components.Executor` instance; chosen with
        ``harness run --executor NAME``.
    """


@hookspec
def harness_register_reporters(register: Callable[[Reporter], None]) -> None:
    """Register reporters: output formats of ``harness report`` (``--format NAME``).

    :param register: call once per :class:`harness.api.components.Reporter` instance.
    """
