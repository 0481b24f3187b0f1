"""Line numbers for config mistakes: tomllib keeps none, so a small scanner walks the
(already valid) source and notes the line where each table, key and array element
starts."""

from __future__ import annotations

import contextlib
import re
import tomllib
from pathlib import Path

from skene_pg.config.model import BARE_KEY, FieldPath, Problem


def syntax_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    # tomllib (3.11) only puts the position in the message: "... (at line 3, column 5)".
    message = str(exc)
    found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if found:
        line: int | None = int(found[1])
        message = f"{message[: found.start()]} (column {found[2]})"
    elif message.endswith(" (at end of document)"):
        line = max(1, len(text.splitlines()))
        message = message.removesuffix(" (at end of document)") + " (at the end of the file)"
    else:
        line = None
    return Problem(path, line, "", f"invalid TOML: {message}")


_SCALAR_END = re.compile(r"[^,\]}\n#]*")
_STRINGS = (
    ('"""', re.compile(r'"""(?:[^\\]|\\.)*?""""{0,2}', re.S)),
    ("'''", re.compile(r"'''.*?''''{0,2}", re.S)),
    ('"', re.compile(r'"(?:[^"\\\n]|\\.)*"')),
    ("'", re.compile(r"'[^'\n]*'")),
)


class Locator:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[FieldPath, int] = {}
        self.array_sizes: dict[FieldPath, int] = {}  # [[array]] path -> elements so far
        # Best effort: on anything unexpected, keep the lines found so far.
        with contextlib.suppress(IndexError, ValueError):
            self._document()

    def locate(self, path: FieldPath) -> int | None:
        """The line of `path`, or of its nearest enclosing table, key or element."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    # -- scanning --
    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def _at(self, token: str) -> bool:
        return self.text.startswith(token, self.pos)

    def _expect(self, token: str) -> None:
        if not self._at(token):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def _skip_blank(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def _note(self, path: FieldPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def _document(self) -> None:
        table: FieldPath = ()
        while True:
            self._skip_blank()
            if self.pos >= len(self.text):
                return
            line = self.line
            if self._at("[["):
                self.pos += 2
                keys = self._key()
                self._skip_blank(newlines=False)
                self._expect("]]")
                array = (*self._resolve(keys[:-1]), keys[-1])
                index = self.array_sizes.get(array, 0)
                self.array_sizes[array] = index + 1
                table = (*array, index)
                self._note(table, line)
            elif self._at("["):
                self.pos += 1
                table = self._resolve(self._key())
                self._skip_blank(newlines=False)
                self._expect("]")
                self._note(table, line)
                self.lines[table] = line  # [a.b] after [a.b.c]: its own header wins
            else:
                self._key_value(table)

    def _resolve(self, keys: list[str]) -> FieldPath:
        # Inside [a.b], a key `a` that is an array of tables means its last element.
        path: FieldPath = ()
        for key in keys:
            path = (*path, key)
            if path in self.array_sizes:
                path = (*path, self.array_sizes[path] - 1)
        return path

    def _key(self) -> list[str]:
        keys = []
        while True:
            self._skip_blank(newlines=False)
            char = self.text[self.pos]
            if char in "\"'":
                raw = self._string()
                keys.append(tomllib.loads(f"k = {raw}")["k"])
            else:
                found = BARE_KEY.match(self.text, self.pos)
                if not found:
                    raise ValueError(f"no key at {self.pos}")
                keys.append(found[0])
                self.pos = found.end()
            self._skip_blank(newlines=False)
            if not self._at("."):
                return keys
            self.pos += 1

    def _key_value(self, table: FieldPath) -> None:
        line = self.line
        path = (*table, *self._key())
        self._note(path, line)
        self._skip_blank(newlines=False)
        self._expect("=")
        self._skip_blank(newlines=False)
        self._value(path)

    def _string(self) -> str:
        for opener, pattern in _STRINGS:
            if self._at(opener):
                found = pattern.match(self.text, self.pos)
                if not found:
                    raise ValueError(f"unterminated string at {self.pos}")
                self.pos = found.end()
                return found[0]
        raise ValueError(f"no string at {self.pos}")

    def _value(self, path: FieldPath) -> None:
        char = self.text[self.pos]
        if char in "\"'":
            self._string()
        elif char == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip_blank()
                if self._at("]"):
                    self.pos += 1
                    return
                self._note((*path, index), self.line)
                self._value((*path, index))
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
                index += 1
        elif char == "{":
            self.pos += 1
            while True:
                self._skip_blank()
                if self._at("}"):
                    self.pos += 1
                    return
                self._key_value(path)
                self._skip_blank()
                if self._at(","):
                    self.pos += 1
        else:
            found = _SCALAR_END.match(self.text, self.pos)
            assert found is not None  # the pattern matches the empty string
            self.pos = found.end()
