"""The notebook is the record: each ``%%exaone`` exchange, saved in its cell's output.

A reply's output carries, next to its Markdown and plain text, one JSON value of this package's
own mimetype: the cell it came from, the system prompt, the messages the exchange added, the
model, the sampling and the token counts. Frontends that do not know the mimetype show the
Markdown; the saved notebook keeps the JSON, so a restarted kernel can rebuild the conversation
from it (``read_notebook``). Timings are left out on purpose: they change with every run, and the
saved outputs are compared by nbval (the meter line shows them).

The format is versioned; a newer version than this package knows is refused in one sentence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExaoneError
from .conversation import is_message_list

MIME = "application/vnd.exaone-jupyter.exchange+json"
FORMAT = "exaone-jupyter/exchange"
VERSION = 1
_STATS = ("prompt_tokens", "completion_tokens", "finish_reason", "n_ctx")
# What a saved message keeps: its role and text, and for tool use the calls an assistant made
# and which call a tool's result answers.
_MESSAGE_KEYS = ("role", "content", "interrupted", "tool_calls", "tool_call_id", "name")


@dataclass(frozen=True)
class Exchange:
    """One cell's question and the reply to it, as saved in the cell's output."""

    cell: str | None  # the frontend's cell id (None from nbclient, terminals, old frontends)
    system: str | None
    messages: list[dict]  # role and content (and ``interrupted``), in order
    model: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    new: bool = False  # the cell started a fresh conversation (``--new``)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "cell": self.cell,
            "system": self.system,
            "messages": self.messages,
            "model": self.model,
            "sampling": self.sampling,
            "stats": {k: v for k, v in self.stats.items() if k in _STATS},
            "new": self.new,
        }

    @classmethod
    def from_json(cls, data: object, source: str) -> Exchange:
        """Validate one saved exchange; ExaoneError (one sentence) when it cannot be read."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ExaoneError(
                f"{source} holds an output that is not an exaone-jupyter exchange; "
                "re-run that cell."
            )
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
            raise ExaoneError(
                f"{source} was saved by a newer exaone-jupyter (exchange format "
                f"{version!r}); upgrade exaone-jupyter to resume it."
            )
        messages, system, cell = data.get("messages"), data.get("system"), data.get("cell")
        if not (
            is_message_list(messages)
            and messages
            and all(_valid_tool_calls(m.get("tool_calls", [])) for m in messages)
            and (system is None or isinstance(system, str))
            and (cell is None or isinstance(cell, str))
        ):
            raise ExaoneError(
                f"{source} holds a damaged exchange (its messages need a role and "
                "a text); re-run that cell, or delete its output."
            )
        sampling, stats = data.get("sampling"), data.get("stats")
        model = data.get("model")
        return cls(
            cell=cell,
            system=system,
            messages=[{k: v for k, v in m.items() if k in _MESSAGE_KEYS} for m in messages],
            model=model if isinstance(model, str) else None,
            sampling=sampling if isinstance(sampling, dict) else {},
            stats=stats if isinstance(stats, dict) else {},
            new=data.get("new") is True,
        )


def _valid_tool_calls(calls: object) -> bool:
    """A list of calls as the template writes them back: each a function's name and its
    arguments as a JSON object."""
    if not isinstance(calls, list):
        return False
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not (
            isinstance(function, dict)
            and isinstance(function.get("name"), str)
            and isinstance(function.get("arguments"), dict)
        ):
            return False
    return True


def read_notebook(path: str | os.PathLike) -> list[Exchange]:
    """Every exchange saved in the notebook at ``path``, in the notebook's order of cells."""
    path = Path(path).expanduser()
    name = path.name
    if path.suffix != ".ipynb":
        raise ExaoneError(f"{name} is not a notebook; give the path of an .ipynb file.")
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExaoneError(
            f"There is no notebook at {path}; check the path (save the notebook "
            "first if it is new)."
        ) from None
    except IsADirectoryError:
        raise ExaoneError(f"{path} is a folder; give the path of the .ipynb file.") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ExaoneError(
            f"{name} is not a readable notebook (not JSON); open and save it in "
            "Jupyter, or give another one."
        ) from None
    except OSError as err:
        raise ExaoneError(
            f"Could not read {path} ({err.strerror or err}); check the path."
        ) from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ExaoneError(
            f"{name} is not a Jupyter notebook (it has no list of cells); give an "
            ".ipynb file saved by Jupyter."
        )
    exchanges: list[Exchange] = []
    for number, cell in enumerate(cells, 1):
        outputs = cell.get("outputs") if isinstance(cell, dict) else None
        for output in outputs if isinstance(outputs, list) else ():
            data = output.get("data") if isinstance(output, dict) else None
            if isinstance(data, dict) and MIME in data:
                exchanges.append(Exchange.from_json(data[MIME], f"Cell {number} of {name}"))
    return exchanges
