"""Generated Python for compiled mapping rules.

Each rule becomes three functions (see :class:`converter.mapping.rules.Rule`): ``items`` lists the items of a
case, ``when`` is the rule condition alone (for ``$ref``), and ``produce`` runs the rule over its items with
the condition, the template, SUPP-- qualifiers and RELREC inline — straight-line ``dict.get`` reads, no
interpreter objects per item. The compiler (:mod:`converter.mapping.verbs`) writes the source with :class:`Source`;
constants and helpers are bound by name in the function's globals, never printed as literals, so an output
holds exactly the objects the mapping file held. The source is registered with :mod:`linecache` under a
file name that names the mapping file, line and rule, and every verb is preceded by a comment naming its
own mapping line, so a traceback through generated code points at the mapping.

A generated function sees the scope chain of the item as parameters ``i0, w0, i1, w1, …``: the item and
its document path at each level (root, each enclosing list item, the item itself).
"""

from __future__ import annotations

import linecache
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from converter.mapping.codecache import compile_cached


class Source:
    """The source text of one generated function and the names it refers to."""

    def __init__(self, filename: str, depth: int, empty_paths: tuple[bool, ...]):
        self.filename = filename
        self.lines: list[str] = []
        self.indent = 1
        self.ns: dict[str, Any] = {}
        self.count = 0
        self.depth = depth                # innermost scope level
        self.empty_paths = empty_paths    # per level: True when that level's document path is "" (the root)
        self.unreachable = False          # inside :meth:`dead`: lines are dropped
        self.params_depth = depth         # levels given up front (their fields can be read ahead, once)
        self.reads: dict[tuple[int, tuple[str, ...]], str] = {}  # (level, field names) → variable
        self.read_groups: list[dict[str, list[tuple[str, str]]]] = []  # per place: base → [(variable, field)]
        self.written = 0                  # lines appended so far (an empty block gets ``pass``)
        self.reads_here()

    def line(self, text: str) -> None:
        """Append one line at the current indentation."""
        if not self.unreachable:
            self.lines.append("    " * self.indent + text)
            self.written += 1

    def reads_here(self) -> None:
        """Read the fields the code that follows uses at this point (the first place: the function's top)."""
        self.lines.append(f"{_READS}{len(self.read_groups)} {self.indent}")
        self.read_groups.append({})

    @contextmanager
    def dead(self) -> Iterator[None]:
        """Code that can never run (checked by compiling it, not generated)."""
        saved = self.unreachable
        self.unreachable = True
        try:
            yield
        finally:
            self.unreachable = saved

    def var(self, prefix: str = "v") -> str:
        """A fresh local variable name (never ``i<n>``/``w<n>``, the scope chain, nor ``d<n>``, field reads)."""
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any, prefix: str = "K") -> str:
        """A name bound to ``value`` in the generated function's globals."""
        self.count += 1
        name = f"{prefix}{self.count}"
        self.ns[name] = value
        return name

    def read(self, level: int, steps: tuple[str, ...]) -> str:
        """The variable holding the value at plain field names ``steps`` below level ``level`` (None when
        absent), read once ahead of the code (see :meth:`reads_here`) however often the template uses it."""
        key = (level, steps)
        name = self.reads.get(key)
        if name is None:
            base = self.read(level, steps[:-1]) if len(steps) > 1 else f"i{level}"
            name = self.reads[key] = f"d{len(self.reads)}"
            self.read_groups[-1].setdefault(base, []).append((name, steps[-1]))
        return name

    def _render_reads(self, group: dict[str, list[tuple[str, str]]], indent: int) -> list[str]:
        """The reads of one place: the fields of each mapping read only when it is one (else all None)."""
        out: list[str] = []

        def below(base: str) -> list[str]:
            names = []
            for name, _ in group.get(base, []):
                names += [name, *below(name)]
            return names

        def render(base: str, depth: int) -> None:
            pad = "    " * depth
            out.append(f"{pad}if type({base}) is dict:")
            for name, step in group[base]:
                out.append(f"{pad}    {name} = {base}.get({step!r})")
                if name in group:
                    render(name, depth + 1)
            out.append(f"{pad}else:")
            out.append(f"{pad}    {' = '.join(below(base))} = None")

        children = {name for fields in group.values() for name, _ in fields}
        for base in group:
            if base not in children:
                render(base, indent)
        return out

    def helper(self, name: str, fn: Any) -> str:
        """Bind a shared helper under a fixed name."""
        self.ns[name] = fn
        return name

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """An indented block under ``header`` (``if …:``, ``for …:``); an empty body becomes ``pass``."""
        self.line(header)
        self.indent += 1
        before = self.written
        try:
            yield
        finally:
            if self.written == before and not self.unreachable:
                self.line("pass")
            self.indent -= 1

    @contextmanager
    def level(self, empty_path: bool) -> Iterator[int]:
        """One more scope level (``$each``); yields its number."""
        saved = self.depth, self.empty_paths
        self.depth += 1
        self.empty_paths = self.empty_paths + (empty_path,)
        try:
            yield self.depth
        finally:
            self.depth, self.empty_paths = saved

    def params(self, depth: int | None = None) -> str:
        """The scope chain as names: ``i0, w0, i1, w1, …`` down to ``depth`` (default: the current level)."""
        return ", ".join(f"i{d}, w{d}" for d in range(1 + (self.depth if depth is None else depth)))

    def build(self, name: str, result: str, params: str | None = None) -> Callable[..., Any]:
        """Compile the function ``name(run, i0, w0, …)`` (or ``name(params)``) returning ``result`` (if any)."""
        lines: list[str] = []
        for line in self.lines:
            if line.startswith(_READS):
                group, indent = line[len(_READS):].split()
                lines += self._render_reads(self.read_groups[int(group)], int(indent))
            else:
                lines.append(line)
        text = "\n".join(lines)
        used = [line for var, line in PROLOGUE if re.search(rf"\b{var}\b", text)]
        body = ["    " + p for p in used] + lines + ([f"    return {result}"] if result else [])
        params = params if params is not None else "run, " + self.params()
        text = f"def {name}({params}):\n" + "\n".join(body) + "\n"
        code = compile_cached(text, self.filename)
        namespace = dict(self.ns)
        exec(code, namespace)  # noqa: S102 - our own generated source, built from compiled mapping files
        linecache.cache[self.filename] = (len(text), None, text.splitlines(True), self.filename)
        return namespace[name]


_READS = "\0reads "  # a place holder line: the reads of one place, rendered by ``build``
PROLOGUE = (("touch", "touch = run.reads.extend"), ("cur", "cur = run.current"), ("refs", "refs = run.refs"))  # bound when the body uses them
