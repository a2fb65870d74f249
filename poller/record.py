"""``Record``: one ``repr``, ``==`` and ``hash`` shared by the poller's frozen dataclasses.

A record that is built and read but seldom printed or compared (a poll's outcome, a retry
decision, a setting) is declared ``@dataclass(frozen=True, slots=True, repr=False, eq=False)``
on this base, and gets the same three methods the decorator would have generated, from this
one class. Python 3.11's decorator compiles each method it generates for each class at every
start, half of a record's cost at import: about 5 ms of ``poller once``, run from cron.

The records compared or hashed in a poll's hot loop (``Event``, ``Interaction``,
``SessionState``...) keep the decorator's own methods: theirs need no lookup of the fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast


class Record:
    """The base of a frozen dataclass declared with ``repr=False, eq=False``.

    ``repr``, ``==`` and ``hash`` behave as the decorator's would: the class's qualified name
    and its fields (those with ``repr``), equality between instances of the very same class
    on the fields with ``compare``, and the hash of those.
    """

    __slots__ = ()

    def _compared(self) -> tuple[object, ...]:
        fields = dataclasses.fields(cast(Any, self))
        return tuple(getattr(self, field.name) for field in fields if field.compare)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(cast(Any, self))
            if field.repr
        )
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())
