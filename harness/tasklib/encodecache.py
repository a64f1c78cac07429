"""An on-disk cache of what cells read and encode, shared by the cells of a run (and by later runs); light: no torch.

Every cell of a suite reads the same data files and encodes them with the same tokenizer: with 62 cells that work is
done 62 times. :func:`cached` keeps its result in the cache folder (``encoded/`` under
:func:`~harness.tasklib.datacheck.cache_root`), so the first cell to need it computes it and the others read it.
Two kinds of entries exist, each keyed by everything its result depends on:

* **loaded splits** (a task's ``load_splits``, capped and carved): the SHA-256 of each data file's *content*
  (:func:`file_digest`), the task's resolved options, the caps (``max_train_examples``, ``eval_size``);
* **encoded splits** (``TaskRun.examples``, text-to-text prompts): a digest of the split's examples as loaded
  (:func:`content_digest`), the tokenizer (:func:`tokenizer_identity`: its class, name or path, a hash of its whole
  serialised definition — vocabulary, merges, normaliser, special tokens —, its length and settings) and the
  encoding options (``max_length``, templates, ...).

Every key also holds the harness version, the Python, ``transformers``, ``tokenizers`` and ``polib`` versions and a
hash of the source files of the code that produces the entry (:func:`code_identity`), so an edited reader or encoder
never sees entries its old self wrote. A hit returns exactly what computing would return (the tests compare them); a file that
cannot be read back (truncated, not JSON, another key, the wrong shape) is ignored and rebuilt. Entries are JSON
(never pickle: loading one runs no code), written to a temporary file and renamed into place, so cells running in
parallel share the folder safely: a reader sees a whole entry or none, and two cells writing the same entry write
the same bytes. Nothing is ever evicted; delete the folder to reclaim the space.

``HARNESS_NO_ENCODE_CACHE=1`` turns the cache off (everything is read and encoded in each cell, as before). Hub
datasets and slow (Python) tokenizers are never cached: their identity is not cheap to pin down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from harness import __version__
from harness.tasklib.datacheck import cache_root
from harness.tasklib.datafiles import SPLITS
from harness.tasklib.prompts import Prompt

T = TypeVar("T")

#: Set to 1 (true, yes, on) to read and encode everything in each cell, without the cache.
DISABLE_ENV = "HARNESS_NO_ENCODE_CACHE"
#: The layout of an entry file; a change makes every older entry a miss.
FORMAT = 1
_LIBRARIES = ("transformers", "tokenizers", "polib")

_code_digests: dict[tuple[str, int, int], str] = {}
_versions: dict[str, str | None] = {}


def enabled() -> bool:
    """Whether the cache is on (it is unless :data:`DISABLE_ENV` is set to a true value)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def folder() -> Path:
    """Where the entries are kept: ``encoded/`` in the harness's cache folder (``HARNESS_CACHE_DIR``, ...)."""
    return cache_root() / "encoded"


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)


def _library(name: str) -> str | None:
    if name not in _versions:
        try:
            _versions[name] = version(name)
        except PackageNotFoundError:
            _versions[name] = None
    return _versions[name]


# -- identities ----------------------------------------------------------------------------------------------------
def file_digest(path: str | Path) -> str | None:
    """The SHA-256 of a file's content; ``None`` when it cannot be read. Computed once per file version: the digest
    is remembered (in ``digests/`` of the cache folder) under the file's path, size, inode and modification and
    change times (ns), so an unchanged file is not read again."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    identity = [os.path.abspath(path), info.st_size, info.st_ino, info.st_mtime_ns, info.st_ctime_ns]
    memo = cache_root() / "digests" / f"{_sha256(_canonical(identity))[:32]}.json"
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if known["identity"] == identity and isinstance(known["sha256"], str):
            return known["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    found = digest.hexdigest()
    _write_atomic(memo, {"identity": identity, "sha256": found})
    return found


def code_identity(*owners: type | ModuleType | str) -> str:
    """A hash of the source files of ``owners`` (modules, module names, or classes: the modules of their whole
    MRO), standard library left out: entries written by other code are misses. Always includes this module."""
    names = {__name__}
    for owner in owners:
        if isinstance(owner, type):
            names.update(cls.__module__ for cls in owner.__mro__)
        else:
            names.add(owner if isinstance(owner, str) else owner.__name__)
    parts = []
    for name in sorted(names):
        if name.partition(".")[0] in sys.stdlib_module_names or name == "builtins":
            continue
        source = getattr(sys.modules.get(name), "__file__", None)
        parts.append([name, _source_digest(source) if source else None])
    return _sha256(_canonical(parts))


def _source_digest(path: str) -> str | None:
    try:
        info = os.stat(path)
        stamp = (path, info.st_size, info.st_mtime_ns)
        if stamp not in _code_digests:
            _code_digests[stamp] = _sha256(Path(path).read_bytes())
        return _code_digests[stamp]
    except OSError:
        return None


def tokenizer_identity(tokenizer: Any) -> str | None:
    """What makes a fast tokenizer encode as it does: its class, ``name_or_path``, a hash of its serialised backend
    (vocabulary, merges, normaliser, pre-tokeniser, post-processor, added tokens; the truncation and padding state
    that each call sets is left out), its length, sides, maximum length, special tokens and plain settings. ``None``
    for a slow tokenizer (not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        return None
    text = backend.to_str()
    # the serialised form starts {"version", "truncation", "padding", "added_tokens", ...}: the two settings a call
    # changes come before "added_tokens" (a quote inside a JSON string is escaped, so this finds the key itself)
    start = text.find('"added_tokens":')
    settings = {
        key: value
        for key, value in sorted(getattr(tokenizer, "init_kwargs", {}).items())
        if key not in _LOADING_KWARGS and _plain(value)
    }
    facts = {
        "class": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "backend": _sha256(text[start:] if start >= 0 else text),
        "length": len(tokenizer),
        "sides": [getattr(tokenizer, "padding_side", None), getattr(tokenizer, "truncation_side", None)],
        "model_max_length": getattr(tokenizer, "model_max_length", None),
        "special": {k: str(v) for k, v in sorted(getattr(tokenizer, "special_tokens_map", {}).items())},
        "settings": settings,
    }
    return _sha256(_canonical(facts))


#: ``init_kwargs`` that say how a tokenizer was loaded, not how it encodes.
_LOADING_KWARGS = frozenset(
    {"local_files_only", "is_local", "cache_dir", "token", "revision", "_from_auto", "_commit_hash", "trust_remote_code"}
)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__qualname__, *(getattr(value, f.name) for f in dataclasses.fields(value))]
    raise TypeError(f"cannot digest {type(value).__name__}")


def content_digest(value: Any) -> str:
    """A SHA-256 of ``value``: JSON data, tuples and dataclasses (their class name and fields, in order)."""
    return _sha256(json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=_as_json))


# -- entries -------------------------------------------------------------------------------------------------------
def entry_key(kind: str, parts: Mapping[str, Any]) -> str:
    """The key of an entry of ``kind`` described by ``parts`` (with the harness, Python and library versions)."""
    context = {
        "format": FORMAT,
        "harness": __version__,
        "python": sys.version_info[:2],
        **{name: _library(name) for name in _LIBRARIES},
    }
    return _sha256(_canonical([kind, context, dict(parts)]))


def entry_path(kind: str, key: str) -> Path:
    return folder() / kind / f"{key}.json"


def _write_atomic(path: Path, data: Any) -> None:
    """Write compact JSON through a temporary file and a rename; a cache that cannot be written only costs time."""
    try:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


#: What a decoder may raise on an entry of the wrong shape (a corrupt or foreign file): the entry is then rebuilt.
SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def cached(
    kind: str,
    parts: Mapping[str, Any] | None,
    build: Callable[[], T],
    dump: Callable[[T], Any],
    load: Callable[[Any], T],
) -> T:
    """``build()``, or what an earlier ``build()`` with the same ``kind`` and ``parts`` stored.

    :param parts: everything the result depends on besides the versions :func:`entry_key` adds (data digests,
        options, tokenizer identity, :func:`code_identity`); ``None`` when that cannot be told: then nothing is cached.
    :param dump: the result as JSON data (a ``TypeError`` leaves it uncached).
    :param load: the inverse of ``dump``; may raise one of :data:`SHAPE_ERRORS` on a malformed payload (rebuilt).
    """
    if parts is None or not enabled():
        return build()
    key = entry_key(kind, parts)
    path = entry_path(kind, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entry, dict) and entry.get("key") == key and entry.get("kind") == kind:
            return load(entry["payload"])
    except (OSError, UnicodeDecodeError, *SHAPE_ERRORS):
        pass  # absent, unreadable or malformed: rebuild (and overwrite)
    value = build()
    try:
        payload = dump(value)
    except (TypeError, ValueError):
        return value
    _write_atomic(path, {"kind": kind, "key": key, "payload": payload})
    return value


def file_parts(files: Iterable[str | Path | None]) -> dict[str, str] | None:
    """``{path: content digest}`` of the data files named (``None`` entries skipped); ``None`` when one cannot be
    read (the load then reports it, uncached)."""
    found = {}
    for name in files:
        if name is None:
            continue
        digest = file_digest(name)
        if digest is None:
            return None
        found[str(name)] = digest
    return found


# -- loaded splits -------------------------------------------------------------------------------------------------
def dump_splits(splits: Any) -> dict[str, Any]:
    """A splits dataclass (train, validation and test: tuples of flat dataclasses; other fields plain) as JSON data."""
    payload: dict[str, Any] = {}
    for field in dataclasses.fields(splits):
        value = getattr(splits, field.name)
        if field.name in SPLITS:
            value = [[getattr(item, f.name) for f in dataclasses.fields(item)] for item in value]
        payload[field.name] = value
    return payload


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def restore_splits(cls: type[T], item: type, payload: Mapping[str, Any]) -> T:
    """The inverse of :func:`dump_splits` (JSON lists become tuples, as every field of a splits dataclass holds)."""
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        raw = payload[field.name]
        values[field.name] = tuple(item(*_tuples(row)) for row in raw) if field.name in SPLITS else _tuples(raw)
    return cls(**values)


def cached_splits(
    kind: str,
    options: Mapping[str, Any],
    files: Iterable[str | Path | None] | None,
    caps: tuple[int | None, int | None],
    code: str,
    build: Callable[[], T],
    cls: type[T],
    item: type,
) -> T:
    """``build()`` (a task's loader: read, check, carve, cap), or its stored result for the same content of
    ``files``, resolved ``options``, ``caps`` (``max_train_examples``, ``eval_size``) and reader ``code``
    (:func:`code_identity`). ``files=None`` (a hub dataset) is never cached."""
    found = None if files is None else file_parts(files)
    parts = None if found is None else {"options": dict(options), "caps": list(caps), "files": found, "code": code}
    return cached(kind, parts, build, dump_splits, lambda payload: restore_splits(cls, item, payload))


# -- encoded rows ----------------------------------------------------------------------------------------------------
def dump_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Encoded examples (dicts with the same keys, in the same order) as ``{"keys", "rows"}`` JSON data."""
    keys = list(rows[0]) if rows else []
    if any(list(row) != keys for row in rows):
        raise TypeError("rows with different keys are not cached")
    return {"keys": keys, "rows": [[row[k] for k in keys] for row in rows]}


def load_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inverse of :func:`dump_rows`."""
    keys = payload["keys"]
    return [dict(zip(keys, row, strict=True)) for row in payload["rows"]]


def dump_prompts(prompts: Iterable[Prompt]) -> list[list[Any]]:
    """Text-to-text prompts (:class:`~harness.tasklib.prompts.Prompt`) as JSON data."""
    return [[p.text, list(p.ids), p.truncated, list(p.demonstrations)] for p in prompts]


def load_prompts(payload: Iterable[Any]) -> list[Prompt]:
    """The inverse of :func:`dump_prompts`."""
    return [Prompt(str(text), tuple(ids), bool(cut), tuple(demos)) for text, ids, cut, demos in payload]
