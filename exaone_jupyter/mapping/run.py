"""``map``: one prompt over many rows, each a one-off question, answered in batches.

This is the session-level half: it turns items and a prompt into one prompt per row (the same
``{name}`` rules as cells, plus ``{}`` for the item itself), checks every setting before anything
runs, serves reproducible rows from the cache, hands the rest to the engine (a batch of sequences
locally, concurrent requests to a server), parses structured replies, and collects one error
line per failed row. Progress goes to a callback; the UI draws it. pandas is never imported: a
Series or DataFrame is recognised by its methods.
"""

from __future__ import annotations

import numbers
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..engine.backend import Backend, Request, RowOutput, Sampling
from ..errors import ExaoneError
from .cache import RowCache, disk_dir, row_key
from .structured import ReplyParseError, Schema

if TYPE_CHECKING:
    from ..session import Session

DEFAULT_MAX_TOKENS = 256  # a row's reply; a map wants short answers
_NAME = r"[^\W\d]\w*"
_WORD = re.compile(_NAME)
_PLACEHOLDER = re.compile(rf"\{{\{{({_NAME})?\}}\}}|\{{({_NAME})?\}}")


class RowError:
    """The value of a row that has no answer: ``message`` says why in one sentence."""

    def __init__(self, message: str, *, interrupted: bool = False) -> None:
        self.message = message
        self.interrupted = interrupted

    def __repr__(self) -> str:
        return f"RowError({self.message!r})"

    def __str__(self) -> str:
        return f"<error: {self.message}>"

    def __bool__(self) -> bool:  # `[r for r in results if r]` keeps the answers
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RowError) and other.message == self.message

    __hash__ = None  # type: ignore[assignment]


@dataclass
class MapProgress:
    """How far a map is; the rates are per second of the run so far."""

    total: int
    done: int = 0
    from_cache: int = 0
    from_disk: int = 0  # of those from the cache, the rows read from the disk cache
    settled_at_start: int = 0  # rows done before anything ran: from the cache, or refused
    errors: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    finished: bool = False

    @property
    def rows_per_s(self) -> float | None:
        """Rows this run computed a second (not those it found settled: cached, or refused)."""
        computed = self.done - self.settled_at_start
        return computed / self.elapsed_s if computed and self.elapsed_s > 0 else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.elapsed_s if self.tokens and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rows_per_s
        return (self.total - self.done) / rate if rate else None


class MapResult(list):
    """The results in input order (text, a parsed value, or a ``RowError``), with the run's
    figures. ``df["label"] = result`` makes a column; ``.series()`` keeps a Series' index."""

    def __init__(
        self,
        values: Sequence[Any],
        progress: MapProgress,
        index: Any = None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__(values)
        self.progress = progress
        self.notes = list(notes)  # sentences about the run as a whole (a disk cache left out...)
        self._index = index

    @property
    def errors(self) -> list[tuple[int, str]]:
        """(row, message) for every row without an answer."""
        return [(i, v.message) for i, v in enumerate(self) if isinstance(v, RowError)]

    @property
    def interrupted(self) -> bool:
        return self.progress.interrupted

    def summary(self) -> str:
        """One line for the run, its notes, then one line per failed row (neighbouring rows
        that failed for the same reason share a line)."""
        p = self.progress
        head = f"{len(self)} row{'' if len(self) == 1 else 's'}: {len(self) - len(self.errors)} answered"
        if p.from_cache:
            disk = f", {p.from_disk} of them from disk" if p.from_disk else ""
            head += f" ({p.from_cache} from the cache{disk})"
        if self.errors:
            head += f", {len(self.errors)} without an answer"
        lines = [head + ("; interrupted." if p.interrupted else "."), *self.notes]
        runs: list[list[Any]] = []  # [first row, last row, message]
        for i, message in self.errors:
            if runs and runs[-1][1] == i - 1 and runs[-1][2] == message:
                runs[-1][1] = i
            else:
                runs.append([i, i, message])
        lines += [f"row {a}: {m}" if a == b else f"rows {a}-{b}: {m}" for a, b, m in runs]
        return "\n".join(lines)

    def series(self, name: str | None = None) -> Any:
        """The results as a pandas Series, with the index of the Series or DataFrame mapped."""
        import pandas as pd

        return pd.Series(list(self), index=self._index, name=name, dtype=object)


def _reproducible(sampling: Sampling) -> bool:
    return sampling.temperature == 0 or sampling.seed is not None


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class _Row:
    index: int
    prompt: str | None = None
    request: Request | None = None
    key: str | None = None
    cached: str | None = None  # "memory" or "disk" when the cache had it


def run_map(
    session: Session,
    items: Any,
    prompt: str | Callable[[Any], str],
    *,
    system: str | None = None,
    schema: Any = None,
    parallel: int | None = None,
    memory_mb: int | None = None,
    cache: bool | str | os.PathLike = True,
    on_progress: Callable[[MapProgress], None] | None = None,
    **sampling_options: Any,
) -> MapResult:
    """See ``exaone_jupyter.map``; ``on_progress`` is called with the figures as rows end."""
    backend = session.require_backend()
    rows_in, index = _rows(items)
    for name, value in (("parallel", parallel), ("memory_mb", memory_mb)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ExaoneError(f"{name} must be a whole number of 1 or more, not {value!r}.")
    sampling = Sampling.from_options(
        Sampling(temperature=0.0, max_tokens=DEFAULT_MAX_TOKENS), **sampling_options
    )
    structure = Schema.of(schema) if schema is not None else None
    disk_dir(cache)  # a bad cache= is refused before anything runs
    texts = _render_all(rows_in, prompt)
    if system is None:
        system = session.conversation.system
    response_format = structure.response_format() if structure is not None else None
    run = _Run(len(rows_in), structure, RowCache(cache if _reproducible(sampling) else False))
    rows = [_Row(i) for i in range(len(rows_in))]
    for row, text in zip(rows, texts, strict=True):
        if isinstance(text, RowError):
            run.values[row.index] = text
            continue
        row.prompt = text
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        row.request = session.one_off(messages, sampling, response_format=response_format)
    try:
        todo = _from_cache(
            rows, run.values, run.store, _model_identity(session), sampling, structure
        )
        run.start(rows, len(todo), on_progress)
        unreachable = run.answer(backend, todo, parallel=parallel, memory_mb=memory_mb)
    finally:
        run.store.close()
    run.finish(todo)
    if unreachable and all(isinstance(v, RowError) for v in run.values):
        raise ExaoneError(unreachable)  # nothing to keep: the one sentence, as a cell says it
    return MapResult(run.values, run.progress, index, run.notes)


class _Run:
    """One map's values, figures and cache while the engine answers its rows."""

    def __init__(self, total: int, structure: Schema | None, store: RowCache) -> None:
        self.values: list[Any] = [None] * total
        self.progress = MapProgress(total=total)
        self.structure = structure
        self.store = store
        self.notes: list[str] = []
        self._on_progress: Callable[[MapProgress], None] | None = None
        self._started = time.perf_counter()

    def start(
        self, rows: list[_Row], todo: int, on_progress: Callable[[MapProgress], None] | None
    ) -> None:
        """The figures before anything runs: rows from the cache and refused rows are done."""
        p = self.progress
        p.done = p.settled_at_start = len(rows) - todo
        p.errors = sum(isinstance(v, RowError) for v in self.values)
        p.from_cache = sum(1 for r in rows if r.cached)
        p.from_disk = sum(1 for r in rows if r.cached == "disk")
        self._on_progress = on_progress
        self._started = time.perf_counter()
        self.report()

    def report(self) -> None:
        self.progress.elapsed_s = time.perf_counter() - self._started
        if self._on_progress is not None:
            self._on_progress(self.progress)

    def answer(
        self, backend: Backend, todo: list[_Row], *, parallel: int | None, memory_mb: int | None
    ) -> str | None:
        """The engine's answers to ``todo``, whichever engine it is; the sentence saying the
        server could not be reached, if it could not."""
        if not todo:
            return None
        requests = [row.request for row in todo if row.request is not None]
        assert len(requests) == len(todo)  # a row without a request is an error already

        def ended(i: int, out: RowOutput) -> None:
            self.row_done(todo[i], out.text, out.finish_reason or "interrupted", out.error)

        def tokens(n: int) -> None:
            self.progress.tokens += n

        try:
            result = backend.generate_many(
                requests, parallel=parallel, memory_mb=memory_mb, on_row=ended, on_tokens=tokens
            )
        except KeyboardInterrupt:  # between the engine's steps
            self.progress.interrupted = True
            return None
        self.notes += result.notes
        for row, out in zip(todo, result.outputs, strict=True):
            if out.finish_reason == "interrupted":
                self.progress.interrupted = True
                if self.values[row.index] is None and out.text:  # started, then stopped
                    self.row_done(row, out.text, "interrupted")
        return result.unreachable

    def row_done(self, row: _Row, text: str, finish: str, error: str | None = None) -> None:
        if error is not None:
            value: Any = RowError(error)
        elif finish == "interrupted":
            value = RowError("interrupted before it finished", interrupted=True)
        else:
            value = _value(text, finish, self.structure)
            if row.key is not None:
                self.store.put(row.key, text, finish)
        self.values[row.index] = value
        self.progress.done += 1
        self.progress.errors += isinstance(value, RowError)
        self.report()

    def finish(self, todo: list[_Row]) -> None:
        """Rows the run never reached are errors; the last figures are reported."""
        for row in todo:
            if self.values[row.index] is None:
                self.values[row.index] = RowError(
                    "not run: the map was interrupted", interrupted=True
                )
                self.progress.interrupted = True
                self.progress.errors += 1
        self.progress.finished = True
        self.report()
        if self.store.note:
            self.notes.insert(0, self.store.note)


def _from_cache(rows, values, store, identity, sampling, structure) -> list[_Row]:
    """Fill in the rows the cache has; the rows left to compute."""
    todo: list[_Row] = []
    for row in rows:
        if values[row.index] is not None:  # an error already: no prompt
            continue
        if store.enabled:
            fed = row.request.prompt_ids or row.request.messages
            row.key = row_key(identity, fed, asdict(sampling), _schema_key(structure))
            hit = store.get(row.key)
            if hit is not None:
                values[row.index] = _value(hit[0], hit[1], structure)
                row.cached = "disk" if hit[2] else "memory"
                continue
        todo.append(row)
    return todo


def _value(text: str, finish: str, structure: Schema | None) -> Any:
    if structure is None:
        return text
    try:
        return structure.parse(text)
    except ReplyParseError as err:
        cut = "; it stopped at max_tokens, so raise max_tokens" if finish == "length" else ""
        return RowError(f"{err}{cut}")


def _schema_key(structure: Schema | None) -> str | None:
    return structure.key if structure is not None else None


def _model_identity(session: Session) -> tuple:
    info = session.require_backend().info
    if info.local is not None:
        gguf = info.local.gguf
        try:  # a file replaced at the same path and size is another model
            modified = os.stat(gguf.path).st_mtime_ns
        except OSError:
            modified = None
        return ("local", str(gguf.path), gguf.file_size, modified)
    if info.server is not None:
        return ("server", info.server.url, info.model)
    return (info.kind, info.model)


# -- items and prompts ------------------------------------------------------------------------------
def _rows(items: Any) -> tuple[list[Any], Any]:
    """The items as a list (a DataFrame's rows as dicts), and the pandas index if any."""
    kind = type(items).__name__
    is_pandas = type(items).__module__.partition(".")[0] == "pandas"
    if is_pandas and kind == "DataFrame":
        rows, index = items.to_dict("records"), items.index
    elif is_pandas and kind == "Series":
        rows, index = list(items.tolist()), items.index
    elif isinstance(items, (list, tuple)):
        rows, index = list(items), None
    else:
        raise ExaoneError(
            f"items must be a list, tuple, pandas Series or DataFrame, not {kind}; "
            "wrap it in list(...)."
        )
    if not rows:
        raise ExaoneError(
            "There are no items to map over; pass a non-empty list, Series or DataFrame."
        )
    return rows, index


def _render_all(rows: list[Any], prompt: Any) -> list[str | RowError]:
    if callable(prompt):
        return [_call(prompt, row, i) for i, row in enumerate(rows)]
    if not isinstance(prompt, str):
        raise ExaoneError(
            f"prompt must be a string with {{}} or {{column}} placeholders, or a function of "
            f"the row, not {type(prompt).__name__}."
        )
    # what each placeholder names (None: the plain item); {{...}} is written as is, {{}} too
    names = [m.group(2) for m in _PLACEHOLDER.finditer(prompt) if not m.group(0).startswith("{{")]
    unnamable = _unnamable_column(prompt, rows[0])
    if unnamable is not None:
        raise ExaoneError(
            f"The prompt's {{{unnamable}}} cannot name a column: a placeholder takes a name like "
            "{text}, so rename that column or pass a function of the row (lambda row: ...)."
        )
    if not names:
        raise ExaoneError(
            "The prompt has no {} or {column} placeholder, so every row would ask the same "
            "question; put {} where the item goes."
        )
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            columns = ", ".join(map(str, row)) or "none"
            if None in names:
                word = next((str(c) for c in row if _WORD.fullmatch(str(c))), None)
                advice = (
                    f"name one, like {{{word}}}"
                    if word is not None
                    else "a placeholder takes a name like {text}, so rename them or pass a "
                    "function of the row (lambda row: ...)"
                )
                raise ExaoneError(
                    f"The prompt's {{}} stands for a plain item, but the rows have columns "
                    f"({columns}); {advice}."
                )
            missing = [n for n in names if n not in row]
            if missing:
                raise ExaoneError(
                    f"The prompt's {{{missing[0]}}} names no column of row {i} (its columns: "
                    f"{columns}); use one of those names."
                )
        elif any(n is not None for n in names):
            first = next(n for n in names if n is not None)
            raise ExaoneError(
                f"The prompt's {{{first}}} names a column, but the items are plain values; use "
                "{} for the item, or pass a DataFrame or dicts."
            )
    return [_fill_or_refuse(prompt, row, names) for row in rows]


def _unnamable_column(prompt: str, row: Any) -> str | None:
    """A column of ``row`` written in braces in ``prompt`` though its name is no word (``{Review
    Text}``, ``{0}``): no placeholder, so it would be asked as those characters."""
    if isinstance(row, dict):
        for column in map(str, row):
            written = re.search(rf"(?<!\{{)\{{{re.escape(column)}\}}(?!\}})", prompt)
            if written and not _WORD.fullmatch(column):
                return column
    return None


def _fill_or_refuse(prompt: str, row: Any, names: list[str | None]) -> str | RowError:
    """The row's question; a placeholder that would be filled with a missing value (None, NaN:
    pandas' empty cell) asks nothing real ("nan is nan years old"), so that row is an error."""
    for name in names:
        value = row if name is None else row[name]
        missing = type(value).__name__ in ("NAType", "NaTType")  # pandas' own missing values
        if value is None or missing or (isinstance(value, numbers.Real) and value != value):
            return RowError("the item is empty" if name is None else f"its {name} is empty")
    return _fill(prompt, row)


def _fill(prompt: str, row: Any) -> str:
    def replace(match: re.Match) -> str:
        escaped, name = match.group(1), match.group(2)
        if match.group(0).startswith("{{"):
            return "{" + (escaped or "") + "}"
        return str(row if name is None else row[name])

    return _PLACEHOLDER.sub(replace, prompt)


def _call(prompt: Callable[[Any], str], row: Any, i: int) -> str | RowError:
    try:
        text = prompt(row)
    except Exception as err:
        return RowError(f"the prompt function raised {type(err).__name__}: {err}")
    if not isinstance(text, str) or not text.strip():
        return RowError(f"the prompt function returned {text!r}, not a question")
    return text
