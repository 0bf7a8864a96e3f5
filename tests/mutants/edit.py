"""A mutant is a small edit of the reference's source: the text of a real
function, with one piece replaced, compiled and put in the function's place.
An edit whose text is no longer in the function (the reference changed) is
stale and says so, rather than silently testing nothing."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass


class StaleEdit(Exception):
    pass


# The source of each function an edit compiled: inspect cannot find it, and
# a second edit of the same function starts from it.
_EDITED_SOURCE: dict[Callable, str] = {}


@dataclass(frozen=True)
class Edit:
    target: str  # "module:Qualified.name"
    old: str
    new: str

    def apply(self) -> Callable[[], None]:
        """Put the edited function in place; returns what puts the original back."""
        module_name, _, qualname = self.target.partition(":")
        module = importlib.import_module(module_name)
        *owner_path, name = qualname.split(".")
        owner = module
        for part in owner_path:
            owner = getattr(owner, part)
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        function = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        function = inspect.unwrap(function)
        # As it stands in the file, so that edits are written with the
        # indentation a reader sees there.
        source = _EDITED_SOURCE.get(function) or inspect.getsource(function)
        found = source.count(self.old)
        if found != 1:
            raise StaleEdit(f"{self.target}: the text to replace occurs {found} times, not once: "
                            f"{self.old!r}")
        # Compiled among the module's own names, so the edited function sees
        # what the original saw (decorators included). A module's function is
        # compiled in the module itself, so that edits of two of its
        # functions see each other; a method in a copy, so that nothing of
        # the class leaks into the module.
        namespace = vars(module) if owner is module else dict(vars(module))
        edited = source.replace(self.old, self.new)
        block = "if True:\n" + edited if edited[:1].isspace() else edited  # a method: in a block
        exec(compile(block, f"<mutant of {self.target}>", "exec"), namespace)
        replacement = namespace[name]
        _EDITED_SOURCE[inspect.unwrap(replacement)] = edited
        if isinstance(original, staticmethod) and not isinstance(replacement, staticmethod):
            replacement = staticmethod(replacement)
        places = [(owner, name)]
        if not isinstance(owner, type):
            # `from module import function` copied the old one elsewhere.
            places += [(other, attribute) for other in list(sys.modules.values()) if other
                       for attribute, value in list(vars(other).items())
                       if value is original and (other, attribute) != (owner, name)]
        for place, attribute in places:
            setattr(place, attribute, replacement)

        def undo() -> None:
            for place, attribute in places:
                setattr(place, attribute, original)

        return undo
