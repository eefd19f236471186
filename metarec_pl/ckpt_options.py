"""Which options a checkpoint decides and which the command line does (``metarec ... --ckpt_path X``).

LightningCLI, given ``--ckpt_path``, replaces the ``model.*`` options of the config by the hyper-parameters stored
in the checkpoint, so options given on the command line were silently lost.  ``metarec`` instead merges them:

* an option given (command line or config) takes effect when it is an evaluation or adaptation option
  (``EVALUATION``, ``ADAPTATION``); one left out takes the checkpoint's value;
* a structural option (``STRUCTURAL``: what the trained weights are) that contradicts the checkpoint is refused
  (``ConfigError`` naming the option, the checkpoint's value and the given value); left out, it takes the
  checkpoint's value;
* the data's facts (``FROM_DATA``: ``model.data_info``, linked from ``data.info``; older checkpoints hold them one
  by one) follow the data; the data's feature schema and every parameter shape must then match the checkpoint
  (``check_fits``: ``CheckpointError``);
* ``data.*`` options left out take the checkpoint's data-module options (the data set it was trained on).

The table of docs/cli.md lists the same sets.  Nothing here imports Lightning (only torch, to read the file).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping, Optional

from metarec_pl import plugins
from metarec_pl.errors import CheckpointError, ConfigError

EVALUATION = ("eval_inner_steps", "ndcg_k", "top_k", "like_threshold", "vmap_chunk_size", "on_divergence",
              "extra_metrics")
ADAPTATION = ("inner_steps", "inner_lr", "first_order", "loss")  # inner loop: these adapt at evaluation too
STRUCTURAL = ("algorithm", "network", "network_args", "algorithm_args", "adapt")
FROM_DATA = ("data_info", "schema", "rating_mean", "num_users", "num_items", "rating_levels")
RECORDED = ("plugin_distributions",)  # filled in by MetaLearner: always the checkpoint's
SPECIAL_PATHS = ("last", "best", "hpc", "registry")  # names Lightning resolves itself


def plain(value: Any) -> Any:
    """Config values as plain data (``Namespace`` -> dict, tuple -> list), for comparisons and messages."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_checkpoint(path: str, option: str = "ckpt_path") -> dict:
    """The checkpoint at ``path`` (tensors on the CPU), or ``CheckpointError`` saying why it cannot be used (naming
    ``option``, the setting that gave the path)."""
    p = Path(path)
    expected = "expected a .ckpt file written by metarec fit (e.g. runs/quickstart/checkpoints/last.ckpt)"
    if not p.exists():
        raise CheckpointError(f"{option}: {path} does not exist; {expected}")
    if p.is_dir():
        inside = sorted(q.name for q in p.glob("*.ckpt"))[:4]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise CheckpointError(f"{option}: {path} is a folder{hint}; {expected}")
    import torch

    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a text file, a pickle of something else: all mean "not usable"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{option}: {path} is not a readable checkpoint ({type(exc).__name__}: {reason}); "
                              f"{expected}, complete (a truncated copy cannot be read)") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{option}: {path} is not a Lightning checkpoint (no state_dict); {expected}")
    return ckpt


def saved_data_info(hyper_parameters: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The data's facts a checkpoint was trained on, as plain data (``DataInfo.to_dict`` form): its ``data_info``,
    or for a checkpoint written before ``DataInfo`` the ``schema`` it holds (``None``: neither)."""
    info = hyper_parameters.get("data_info")
    if info is not None:
        return plain(info)
    schema = hyper_parameters.get("schema")
    return None if schema is None else {"schema": plain(schema)}


def keyword_defaults(cls: Any) -> dict[str, Any]:
    """Default values of the keyword arguments of ``cls`` (following ``**kwargs`` up its bases)."""
    out: dict[str, Any] = {}
    for klass in inspect.getmro(cls) if inspect.isclass(cls) else (cls,):
        func = klass.__init__ if inspect.isclass(klass) else klass
        if func is object.__init__:
            break
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            break
        for p in params:
            if p.default is not p.empty:
                out.setdefault(p.name, plain(p.default))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


def _normal(key: str, value: Any, algorithm: str) -> Any:
    """A structural option's value in a form where equal meanings compare equal (defaults filled in)."""
    value = plain(value)
    try:
        if key == "adapt":
            return list(value) if value else list(plugins.get_algorithm(algorithm).default_adapt)
        if key in ("network_args", "algorithm_args"):
            return value or {}
    except plugins.UnknownPluginError:
        return value
    return value


# an ``*_args`` option -> (plugin kind, the option naming its class)
ARGS_KINDS = {"network_args": ("network", "network"), "algorithm_args": ("algorithm", "algorithm")}


def _with_defaults(key: str, mine: dict, theirs: dict, saved: Mapping[str, Any]) -> tuple[dict, dict]:
    """Both ``*_args`` mappings with the class's keyword defaults filled in for every key either one names, so
    ``{}`` and ``{dim: 8}`` compare equal where 8 is the default."""
    kind, option = ARGS_KINDS[key]
    try:
        defaults = keyword_defaults(plugins.get(kind, saved.get(option)))
    except plugins.UnknownPluginError:
        defaults = {}
    named = set(mine) | set(theirs)
    filled = {k: v for k, v in defaults.items() if k in named}
    return {**filled, **mine}, {**filled, **theirs}


def _check_structural(key: str, given: Mapping[str, Any], saved: Mapping[str, Any], algorithm: Any,
                      path: str) -> None:
    """``ConfigError`` when the given structural option ``key`` means something else than the checkpoint's."""
    mine, theirs = _normal(key, given[key], algorithm), _normal(key, saved[key], algorithm)
    if key in ARGS_KINDS:
        mine, theirs = _with_defaults(key, mine, theirs, saved)
    if mine != theirs:
        shown = theirs if key in (*ARGS_KINDS, "adapt") else saved[key]
        raise ConfigError(f"model.{key}: given {plain(given[key])!r}, but the checkpoint {path} was trained "
                          f"with {shown!r}; expected the checkpoint's value (or leave model.{key} out: it is "
                          f"taken from the checkpoint)")


def resolve_model_options(saved: Mapping[str, Any], given: Mapping[str, Any], path: str,
                          accepted: Optional[set[str]] = None) -> dict[str, Any]:
    """The ``model.*`` options to take from the checkpoint's hyper-parameters ``saved``: those not ``given``.

    Raises ``ConfigError`` when a given structural option contradicts the checkpoint's.  ``accepted``: option names
    the model takes now (a checkpoint of an older version may hold others; they are left out).
    """
    saved = {k: plain(v) for k, v in saved.items() if not k.startswith("_")}
    given = {k: plain(v) for k, v in given.items()}
    algorithm = saved.get("algorithm", given.get("algorithm"))
    for key in STRUCTURAL:
        if key in given and key in saved:
            _check_structural(key, given, saved, algorithm, path)
    return {k: v for k, v in saved.items()
            if k not in given and k not in FROM_DATA and (accepted is None or k in accepted)}


def resolve_data_options(saved: Optional[Mapping[str, Any]], given: Mapping[str, Any],
                         accepted: Optional[set[str]] = None) -> dict[str, Any]:
    """The ``data.*`` options to take from the checkpoint's data-module hyper-parameters: those not ``given``."""
    if not saved:
        return {}
    return {k: plain(v) for k, v in saved.items()
            if not k.startswith("_") and k not in given and (accepted is None or k in accepted)}


def _schema_difference(here: list[dict], there: list[dict]) -> Optional[str]:
    def field(f: dict) -> str:
        return f"{f.get('side')}_{f.get('name')}"

    ours, theirs = {field(f): f for f in here}, {field(f): f for f in there}
    for key, spec in theirs.items():
        if key not in ours:
            return f"field '{key}' of the checkpoint is missing from the data"
        if plain(ours[key]) != plain(spec):
            diff = next(k for k in spec if plain(spec[k]) != plain(ours[key].get(k)))
            return f"field '{key}' has {diff} {spec[diff]!r} in the checkpoint, {ours[key].get(diff)!r} in the data"
    extra = [k for k in ours if k not in theirs]
    if extra:
        return f"the data has field '{extra[0]}', which the checkpoint has not"
    if [field(f) for f in here] != [field(f) for f in there]:
        return "the fields come in another order"
    return None


def check_fits(state_dict: Mapping[str, Any], saved_schema: Optional[list[dict]], model_state: Mapping[str, Any],
               data_schema: Optional[list[dict]], path: str) -> None:
    """``CheckpointError`` unless the checkpoint's weights (``state_dict``) and feature schema fit the model built
    from this configuration (``model_state``, ``data_schema``), naming the first parameter or field that differs."""
    expected = "expected the model and data options it was trained with"
    if saved_schema is not None and data_schema is not None:
        diff = _schema_difference(plain(data_schema), plain(saved_schema))
        if diff:
            raise CheckpointError(f"ckpt_path: {path} was trained on other data: {diff}; expected the data set "
                                  f"(data.*) it was trained on")
    for name, tensor in state_dict.items():
        if name not in model_state:
            raise CheckpointError(f"ckpt_path: {path} does not fit this configuration: parameter '{name}' of the "
                                  f"checkpoint is not in the model built here; {expected}")
        here = tuple(model_state[name].shape)
        if tuple(tensor.shape) != here:
            raise CheckpointError(f"ckpt_path: {path} does not fit this configuration: parameter '{name}' has shape "
                                  f"{list(tensor.shape)} in the checkpoint, {list(here)} here; {expected}")
    missing = [n for n in model_state if n not in state_dict]
    if missing:
        raise CheckpointError(f"ckpt_path: {path} does not fit this configuration: the model built here has "
                              f"parameter '{missing[0]}', which the checkpoint has not; {expected}")
