"""The sampling and load settings as the notebook offers them, built from where they are declared.

``Sampling`` and ``LoadOptions`` (engine/backend.py) declare each setting once: its name, type,
default, help, short option and checks. This module turns those fields into the magics' options
(``%%exaone -t``, ``%exaone load --n-ctx``), the ``%config ExaoneMagics`` traits and the panel's
labels, and reads the values back into the dataclasses, which check them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, get_args, get_type_hints

from traitlets import Bool, Float, Int, TraitType, Unicode

from ..engine.backend import LoadOptions, Sampling


@dataclass(frozen=True)
class Setting:
    """One field of ``Sampling`` or ``LoadOptions`` that users set (one declared with
    ``setting``)."""

    owner: type[Sampling] | type[LoadOptions]
    name: str
    kind: type  # float, int, bool; str where a word or a number is taken (gpu_layers)
    default: Any
    help: str  # a phrase, as an option's help reads
    short: str  # the option's letter, or ""
    metavar: str  # the value's name in a usage line, or "" (argparse's own: TOP_P)
    config: bool  # a %config ExaoneMagics trait too

    @property
    def label(self) -> str:
        """``Max tokens``: the setting's name as a label."""
        return self.name.replace("_", " ").capitalize()

    @property
    def sentence(self) -> str:
        """The help as a sentence (a trait's help, a tooltip)."""
        return f"{self.help[:1].upper()}{self.help[1:]}."

    def argument(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The option's names and argparse keywords; an option not given is None ("keep")."""
        long = "--" + self.name.replace("_", "-")
        names = (f"-{self.short}", long) if self.short else (long,)
        options: dict[str, Any] = {"default": None, "help": self.help}
        if self.kind is bool:
            options["action"] = "store_true"
        else:
            options["type"] = self.kind
        if self.metavar:
            options["metavar"] = self.metavar
        return names, options

    def trait(self) -> TraitType:
        """The ``%config ExaoneMagics`` trait; where the default is None, the trait's is 0."""
        if self.default is None:
            return Int(0, help=f"{self.sentence[:-1]}; 0 is the default.").tag(config=True)
        kind = {bool: Bool, float: Float, int: Int, str: Unicode}[self.kind]
        return kind(self.default, help=self.sentence).tag(config=True)

    def from_trait(self, value: Any) -> Any:
        """The option a trait's value stands for (0 for None, where None is the default)."""
        return None if self.default is None and value == 0 else value

    def check(self, value: Any) -> None:
        """Raise the ExaoneError (one sentence) that a bad trait value deserves."""
        self.owner.from_options(**{self.name: self.from_trait(value)})


def settings_of(owner: type[Sampling] | type[LoadOptions]) -> tuple[Setting, ...]:
    """The fields of ``owner`` that users set, in the order it declares them."""
    hints = get_type_hints(owner)
    return tuple(
        Setting(owner, f.name, _kind(hints[f.name]), f.default, **f.metadata)
        for f in fields(owner)
        if "help" in f.metadata
    )


def _kind(hint: Any) -> type:
    """``float`` for ``float``, ``int`` for ``int | None``, ``str`` for ``str | int``."""
    kinds = [k for k in get_args(hint) or (hint,) if k is not type(None)]
    return str if str in kinds else kinds[0]


SAMPLING = settings_of(Sampling)  # %%exaone's options
LOADING = settings_of(LoadOptions)  # %exaone load's options
SETTINGS = {s.name: s for s in SAMPLING + LOADING}
CONFIG = {name: s for name, s in SETTINGS.items() if s.config}  # ExaoneMagics's traits


def config_trait(name: str) -> TraitType:
    """The ``%config ExaoneMagics`` trait of the setting called ``name``."""
    return CONFIG[name].trait()


def configured(settings: tuple[Setting, ...], source: object) -> dict[str, Any]:
    """The values ``source`` (ExaoneMagics) is configured with, as options."""
    return {s.name: s.from_trait(getattr(source, s.name)) for s in settings if s.config}


def given(settings: tuple[Setting, ...], args: object) -> dict[str, Any]:
    """The options a magic's line gave (parsed: ``args``); those not given are left out."""
    values = {s.name: getattr(args, s.name) for s in settings}
    return {name: value for name, value in values.items() if value is not None}
