"""Typed configuration built from params.yaml.

Why dataclasses: a stage reads only its own sections, and a misspelt key should fail at
start-up with the section and key named, not as an AttributeError an hour in. Each stage
builds the dataclasses it needs with `section(...)` and declares the same keys in
dvc.yaml, so DVC re-runs a stage exactly when one of its own settings changes.

params.yaml is composed from conf/ by DVC's Hydra integration (`dvc exp run -S ...`);
the committed file is the composed `local` profile.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from specdraft.io import InputError

PARAMS_FILE = Path(os.environ.get("SPECDRAFT_PARAMS", "params.yaml"))

T = TypeVar("T")

# ------------------------------------------------------------------ which keys a stage reads
# dvc.yaml must declare exactly the params keys each stage reads (a missing key leaves a
# stale metric standing, an extra one re-runs a GPU stage for nothing). The keys are
# recorded where they are read: every `get` and every field read of a dataclass built here.
# With SPECDRAFT_TRACE_PARAMS=<folder>, a process writes what it read there at exit, and
# the end-to-end test compares it with dvc.yaml (tests/test_pipeline_e2e.py).
_TRACE_DIR = os.environ.get("SPECDRAFT_TRACE_PARAMS")
_reads: set[str] = set()
_paused = 0


def _record(key: str) -> None:
    if _TRACE_DIR and not _paused:
        _reads.add(key)


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Reads that do not decide results (fingerprints, validation) are not recorded."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


def keys_read() -> list[str]:
    return sorted(_reads)


def _write_trace() -> None:
    import hashlib

    from specdraft.io import write_json

    argv = [Path(sys.argv[0]).name, *sys.argv[1:]]
    if sys.argv[0].endswith(".py"):  # python -m pkg.mod: argv[0] is the module's file
        src = Path(__file__).resolve().parents[1]
        with contextlib.suppress(ValueError):
            argv[0] = ".".join(Path(sys.argv[0]).resolve().relative_to(src).with_suffix("").parts)
    name = hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:16]
    write_json(Path(_TRACE_DIR) / f"{name}.json", {"argv": argv, "keys": keys_read()})


if _TRACE_DIR:
    atexit.register(_write_trace)


class _TracedDict(dict):
    """A mapping field (e.g. prompts.system): reading one entry records `where.key`;
    iterating over it records the whole field."""

    def __init__(self, data: dict, where: str):
        super().__init__(data)
        self.where = where

    def __getitem__(self, key: Any) -> Any:
        _record(f"{self.where}.{key}")
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        _record(f"{self.where}.{key}")
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        _record(f"{self.where}.{key}")
        return super().__contains__(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        _record(self.where)
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        _record(self.where)
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        _record(self.where)
        return super().values()


def _traced(cls: type[T], where: str) -> type[T]:
    """A subclass of dataclass `cls` whose field reads are recorded as `where.field`
    (mapping and dataclass fields record their own entries instead)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    def __getattribute__(self: Any, name: str) -> Any:
        value = super(sub, self).__getattribute__(name)
        if name in names and not isinstance(value, _TracedDict) and not hasattr(type(value), "_trace_where"):
            _record(f"{where}.{name}")
        return value

    sub = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__, "__qualname__": cls.__qualname__,
                                      "__module__": cls.__module__, "_trace_where": where})
    return sub


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else PARAMS_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: params file not found (run from the repository root)") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def get(params: dict[str, Any], dotted: str, file: str | os.PathLike = PARAMS_FILE) -> Any:
    """params['a']['b'] for 'a.b', with an error naming the missing key."""
    _record(dotted)
    cur: Any = params
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(cur, dict) or part not in cur:
            where = ".".join(dotted.split(".")[:i]) or "<top>"
            valid = sorted(cur) if isinstance(cur, dict) else []
            raise InputError(f"{file}: missing key {dotted!r} (no {part!r} under {where}; has {valid})")
        cur = cur[part]
    return cur


def setting(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: tuple[Any, ...] | None = None,
            pattern: str | None = None, keys: tuple[str, ...] | None = None, key_of: str | None = None) -> Any:
    """A dataclass field with what makes it valid, checked by `build` (the one place settings
    are checked) with the dotted key in the message, so a bad value stops the stage before it
    starts work: a range (ge, gt, le, lt), `choices`, a regular expression the whole string
    must match (`pattern`), the `keys` a mapping must have, or `key_of`: the value must be a
    key of the sibling mapping field of that name (teacher.model of teacher.prices_per_mtok)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices),
                              ("pattern", pattern), ("keys", keys), ("key_of", key_of)) if v is not None}
    return dataclasses.field(default=default, metadata=meta)


def _check(f: dataclasses.Field, value: Any, where: str, siblings: dict[str, Any]) -> None:
    import re

    m = f.metadata
    if value is None or not m:
        return
    if "choices" in m and value not in m["choices"]:
        raise InputError(f"{PARAMS_FILE}: {where}: {value!r} unknown; valid: {list(m['choices'])}")
    if "pattern" in m and isinstance(value, str) and not re.fullmatch(m["pattern"], value):
        raise InputError(f"{PARAMS_FILE}: {where}: {value!r} is not of the form {m['pattern']}")
    if "keys" in m and (missing := [k for k in m["keys"] if k not in value]):
        raise InputError(f"{PARAMS_FILE}: {where}: missing {missing[0]!r}; needs {list(m['keys'])}")
    if "key_of" in m and value not in (siblings.get(m["key_of"]) or {}):
        parent = where.rsplit(".", 1)[0]
        raise InputError(f"{PARAMS_FILE}: {where}: {value!r} has no entry in {parent}.{m['key_of']}; has "
                         f"{sorted(siblings.get(m['key_of']) or {})}")
    bounds = [(op, m[op]) for op in ("ge", "gt", "le", "lt") if op in m]
    ok = {"ge": lambda a, b: a >= b, "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b}
    if not all(ok[op](value, b) for op, b in bounds):
        sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        raise InputError(f"{PARAMS_FILE}: {where}: must be " + " and ".join(f"{sign[op]} {b}" for op, b in bounds)
                         + f", got {value!r}")


def build(cls: type[T], data: Any, where: str) -> T:
    """Instantiate dataclass `cls` from a mapping, recursively, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise InputError(f"{PARAMS_FILE}: {where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{PARAMS_FILE}: {where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(f"{PARAMS_FILE}: {where}: missing key {name!r}")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    for name in kwargs:
        _check(fields[name], kwargs[name], f"{where}.{name}", kwargs)
    if not _TRACE_DIR:
        return cls(**kwargs)
    with untraced():  # __post_init__ validates every field; that is not a use
        obj = _traced(cls, where)(**kwargs)
        for name in fields:
            value = getattr(obj, name)
            if type(value) is dict:
                object.__setattr__(obj, name, _TracedDict(value, f"{where}.{name}"))
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, where)
        # one of several forms, told apart by shape: a mapping is the dataclass form
        form = next((a for a in inner if dataclasses.is_dataclass(a) if isinstance(value, dict)), None) or \
            next((a for a in inner if a in (str, int, float, bool) and isinstance(value, a)), None)
        if form is None:
            names = " or ".join("a mapping" if dataclasses.is_dataclass(a) else a.__name__ for a in inner)
            raise InputError(f"{PARAMS_FILE}: {where}: expected {names}, got {value!r}")
        return _coerce(form, value, where)
    if origin is dict and args and dataclasses.is_dataclass(args[1]):
        if not isinstance(value, dict):
            raise InputError(f"{PARAMS_FILE}: {where}: expected a mapping")
        return {k: build(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple) and value is not None and not isinstance(value, list | tuple):
        raise InputError(f"{PARAMS_FILE}: {where}: expected a list, got {value!r}")
    if tp is float and isinstance(value, int):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise InputError(f"{PARAMS_FILE}: {where}: expected {tp.__name__}, got {value!r}")
    return value


def section(cls: type[T], key: str, params: dict[str, Any] | None = None) -> T:
    """Build `cls` from the params section `key` (dotted). Only the fields the caller
    then reads count as read."""
    params = params if params is not None else load_params()
    with untraced():
        data = get(params, key)
    return build(cls, data, key)


# ----------------------------------------------------------------------- shared sections
@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Process-wide settings: torch threads matter on a 2-core laptop (the
    local profile measures both cores against one in conf/profile/local.yaml)."""

    threads: int = setting(1, ge=1)
    # auto: CUDA when torch finds a GPU, else the CPU (specdraft.device: what applies where)
    device: str = setting("auto", choices=("auto", "cpu", "cuda"))


def apply_runtime(rt: RuntimeConfig) -> int:
    """Set thread counts before torch is used; tokenizers' own pool is turned off too.

    `threads` is what the machine gives the stage: under a multi-process launcher
    (`accelerate launch`, torchrun: LOCAL_WORLD_SIZE processes on this machine) each process
    takes its share, so two CPU ranks on two cores do not fight over them. Returns the
    count this process uses."""
    threads = max(1, rt.threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for processes started later
    try:
        import torch
    except ImportError:  # data-only stages do not need torch
        return threads
    torch.set_num_threads(threads)
    return threads
