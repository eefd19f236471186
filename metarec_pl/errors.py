"""User-caused errors: the ``metarec`` command reports each in one line (``metarec: error: ...``, exit code 2).

Every user error is a ``ValueError`` (what the callers of a constructor expect from a bad argument):

* ``ConfigError``: an option's value or a combination of options (``model.top_k: [0]``, an unknown key of
  ``model.algorithm_args``, an option that contradicts the checkpoint's, a W&B logger without a login, a checkpoint
  folder that holds another run's checkpoints);
* ``CheckpointError``: a checkpoint file that is missing, a folder, unreadable (truncated, not a checkpoint) or
  written for another configuration (other parameter shapes, another feature schema);
* ``metarec_pl.data.types.DataError``: bad input data (files, fields, ids), raised by the data layer.

Plugin look-ups raise ``plugins.UnknownPluginError`` / ``PluginConflictError`` and a diverging inner loop raises
``divergence.DivergenceError``; the command reports those in one line too.  Messages say what is wrong, where
(the option or file) and what was expected.  This module imports nothing of the project (bottom layer).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional


class ConfigError(ValueError):
    """A bad option value or combination: the message names the option, the value and what was expected."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, a folder, unreadable, or written for another configuration."""


def accepted_keywords(target: Any, follow_bases: bool = True) -> Optional[set[str]]:
    """The keyword arguments ``target`` (a class or function) accepts; ``None`` when it accepts any keyword.

    A class whose ``__init__`` takes ``**kwargs`` is taken to pass them on to its base's ``__init__`` (algorithms
    do: ``Bias(*args, item_shrink, **kwargs)``), so the bases' keywords are added, up to one without ``**kwargs``;
    ``follow_bases=False``: such a class accepts anything (its ``**kwargs`` may go elsewhere, e.g. a data set's
    protocol options)."""
    classes = inspect.getmro(target) if inspect.isclass(target) else (target,)
    if not follow_bases:
        classes = classes[:1]
    names: set[str] = set()
    for cls in classes:
        func = cls.__init__ if inspect.isclass(cls) else cls
        if func is object.__init__:
            return names
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: cannot tell
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
        if not inspect.isclass(cls):
            return None
    return None


def check_keywords(target: Any, given: Optional[Mapping[str, Any]], option: str, what: str,
                   reserved: Mapping[str, str] = {}, follow_bases: bool = True) -> None:
    """Raise ``ConfigError`` when ``given`` (e.g. ``model.algorithm_args``) holds a key ``target`` does not take.

    ``reserved`` maps keys that must be set elsewhere to where (``{"inner_steps": "model.inner_steps"}``);
    ``follow_bases``: see ``accepted_keywords``.
    """
    if not given:
        return
    if not isinstance(given, Mapping):
        raise ConfigError(f"{option}: {given!r} is not a mapping; expected {{key: value, ...}} of {what}'s options")
    for key in given:
        if key in reserved:
            raise ConfigError(f"{option}: key '{key}' is set by {reserved[key]}, not here; expected it as "
                              f"{reserved[key]}")
    accepted = accepted_keywords(target, follow_bases)
    if accepted is None:
        return
    accepted -= set(reserved)
    unknown = [k for k in given if k not in accepted]
    if unknown:
        raise ConfigError(f"{option}: unknown key '{unknown[0]}' for {what}; expected one of: "
                          f"{', '.join(sorted(accepted)) or '(none: it takes no options)'}")
