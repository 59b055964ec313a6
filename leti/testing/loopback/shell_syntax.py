"""The loopback shell's parser: ``sh`` command lines (quotes, ``$VAR``, ``$(…)``, globs, ``;`` ``&&`` ``||``
``|``, redirections) into simple commands."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ShellSyntax(Exception):
    pass


@dataclass
class Part:
    kind: str  # lit | var | cmd
    text: str
    quoted: bool


@dataclass
class Simple:
    words: list[list[Part]] = field(default_factory=list)
    redirs: list[tuple[str, list[Part] | None]] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.words and not self.redirs


def _dollar(src: str, i: int, quoted: bool) -> tuple[Part, int]:
    """Parse the expansion starting at ``src[i] == '$'``."""
    if src.startswith("$(", i):
        depth, j = 1, i + 2
        while j < len(src):
            c = src[j]
            if c == "\\":
                j += 2
                continue
            if c == "'":
                end = src.find("'", j + 1)
                j = len(src) if end < 0 else end + 1
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return Part("cmd", src[i + 2 : j], quoted), j + 1
            j += 1
        raise ShellSyntax("syntax error: unmatched '('")
    if src.startswith("${", i):
        end = src.find("}", i)
        if end < 0:
            raise ShellSyntax("syntax error: missing '}'")
        return Part("var", src[i + 2 : end], quoted), end + 1
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[?$#!0-9@*-]", src[i + 1 :])
    if m:
        return Part("var", m.group(), quoted), i + 1 + len(m.group())
    return Part("lit", "$", quoted), i + 1


def tokenize(src: str) -> list:
    """Words (lists of parts) and operator strings, following POSIX quoting rules."""
    toks: list = []
    word: list[Part] | None = None

    def add(part: Part) -> None:
        nonlocal word
        if word is None:
            word = []
        word.append(part)

    def flush() -> None:
        nonlocal word
        if word is not None:
            toks.append(word)
            word = None

    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t":
            flush()
            i += 1
        elif c in "\n;":
            flush()
            toks.append(";")
            i += 1
        elif c in "&|":
            flush()
            op = c * 2 if src.startswith(c * 2, i) else c
            toks.append(op)
            i += len(op)
        elif c == ">":
            flush()
            op = ">>" if src.startswith(">>", i) else ">"
            toks.append(op)
            i += len(op)
        elif c == "<":
            flush()
            toks.append("<")
            i += 1
        elif c == "2" and word is None and src.startswith("2>", i):
            op = "2>&1" if src.startswith("2>&1", i) else "2>"
            toks.append(op)
            i += len(op)
        elif c == "#" and word is None:
            end = src.find("\n", i)
            i = n if end < 0 else end
        elif c in "()":
            raise ShellSyntax(f"syntax error: '{c}' unexpected")
        elif c == "'":
            end = src.find("'", i + 1)
            if end < 0:
                raise ShellSyntax("syntax error: unterminated quoted string")
            add(Part("lit", src[i + 1 : end], True))
            i = end + 1
        elif c == '"':
            buf: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntax("syntax error: unterminated quoted string")
                c = src[i]
                if c == '"':
                    break
                if c == "\\" and i + 1 < n and src[i + 1] in '$`"\\\n':
                    if src[i + 1] != "\n":
                        buf.append(src[i + 1])
                    i += 2
                elif c in "$`":
                    add(Part("lit", "".join(buf), True))
                    buf = []
                    if c == "$":
                        part, i = _dollar(src, i, True)
                    else:
                        end = src.find("`", i + 1)
                        if end < 0:
                            raise ShellSyntax("syntax error: unterminated backquote")
                        part, i = Part("cmd", src[i + 1 : end], True), end + 1
                    add(part)
                else:
                    buf.append(c)
                    i += 1
            add(Part("lit", "".join(buf), True))
            i += 1
        elif c == "\\":
            if i + 1 < n and src[i + 1] != "\n":
                add(Part("lit", src[i + 1], True))
            i += 2
        elif c == "$":
            part, i = _dollar(src, i, False)
            add(part)
        elif c == "`":
            end = src.find("`", i + 1)
            if end < 0:
                raise ShellSyntax("syntax error: unterminated backquote")
            add(Part("cmd", src[i + 1 : end], False))
            i = end + 1
        else:
            add(Part("lit", c, False))
            i += 1
    flush()
    return toks


def parse(toks: list) -> list[tuple[str, list[Simple]]]:
    """Split tokens into (connector, pipeline) items; the connector says when the pipeline runs."""
    items: list[tuple[str, list[Simple]]] = []
    cur = Simple()
    pipeline = [cur]
    connector = ";"
    pending: str | None = None
    for tok in toks:
        if isinstance(tok, list):
            if pending:
                cur.redirs.append((pending, tok))
                pending = None
            else:
                cur.words.append(tok)
            continue
        if pending:
            raise ShellSyntax(f"syntax error: '{tok}' unexpected")
        if tok in (">", ">>", "<", "2>"):
            pending = tok
        elif tok == "2>&1":
            cur.redirs.append((tok, None))
        elif tok == "|":
            if cur.empty():
                raise ShellSyntax("syntax error: '|' unexpected")
            cur = Simple()
            pipeline.append(cur)
        else:  # ; & && ||
            if cur.empty():
                if tok in ("&&", "||") or len(pipeline) > 1 or not items and tok in (";", "&"):
                    raise ShellSyntax(f"syntax error: '{tok}' unexpected")
                continue
            items.append((connector, pipeline))
            connector = ";" if tok in (";", "&") else tok
            cur = Simple()
            pipeline = [cur]
    if pending:
        raise ShellSyntax("syntax error: unexpected end of file")
    if not cur.empty():
        items.append((connector, pipeline))
    elif len(pipeline) > 1 or connector in ("&&", "||"):
        raise ShellSyntax("syntax error: unexpected end of file")
    return items
