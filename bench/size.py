#!/usr/bin/env python3
"""`make size`: where the filter's bytes go, written into BENCHMARKS.md's "Module size" section.

`make build` runs wasm-opt once with `-g` (names kept) into target/.../meshrules.named.wasm and
strips that copy into wasm/meshrules.wasm, so both have the same code and data byte for byte
(this script checks it). From the named copy it reports the shipped module's size, the largest
functions (code bytes of the body, demangled, without the hash) and the code per crate and per
meshrules module, plus data. Python's standard library only: nothing to install.

Attribution: a function counts for the crate that its demangled path starts with; a trait
method `<T as Trait>::f` for T's crate (`<&str as Trait>` and other builtin types: Trait's).
Generic code counts where it is defined, not where it is instantiated: serde's derive output
for a meshrules_config type is `<meshrules_config::X as serde::Deserialize>::deserialize` and
counts for meshrules_config, but `serde_json::de::from_str<meshrules_config::X>` counts for
serde_json, and `core::ptr::drop_in_place<meshrules::X>` for core.

The levers tried on the size, with their numbers, are in bench/size_levers.md, which is copied
into the section as it stands.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "wasm" / "meshrules.wasm"
NAMED = REPO / "target" / "wasm32-wasip1" / "release" / "meshrules.named.wasm"
RAW = REPO / "target" / "wasm32-wasip1" / "release" / "meshrules.wasm"
LEVERS = REPO / "bench" / "size_levers.md"
HEADING = "## Module size"

SECTION_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory",
                 6: "global", 7: "export", 8: "start", 9: "element", 10: "code", 11: "data",
                 12: "datacount"}
BUILTIN_TYPES = {"str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
                 "i32", "i64", "i128", "isize", "f32", "f64", "dyn", "T", "_"}


class StaleNames(Exception):
    """The named copy is not the module measured (another build, or MESHRULES_WASM)."""


class Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def u32(self) -> int:
        result = shift = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    def name(self) -> str:
        n = self.u32()
        self.pos += n
        return self.data[self.pos - n:self.pos].decode("utf-8", "replace")

    def skip_import_desc(self) -> int:
        """Skips an import's descriptor; returns its kind (0 function, 1 table, 2 memory, 3 global)."""
        kind = self.data[self.pos]
        self.pos += 1
        if kind == 0:
            self.u32()
        elif kind == 1:
            self.pos += 1
            self.limits()
        elif kind == 2:
            self.limits()
        elif kind == 3:
            self.pos += 2
        else:
            raise ValueError(f"unknown import kind {kind}")
        return kind

    def limits(self) -> None:
        flags = self.u32()
        self.u32()
        if flags & 1:
            self.u32()


class Module:
    """The parts of a wasm binary this report needs."""

    def __init__(self, path: Path):
        data = path.read_bytes()
        if data[:4] != b"\0asm":
            raise ValueError(f"{path}: not a wasm module")
        self.path, self.total = path, len(data)
        self.sections: list[tuple[str, int]] = []  # (name, payload bytes), in order
        self.imported_functions = 0
        self.bodies: list[int] = []  # code bytes of each defined function, in order
        self.data_segments: list[int] = []
        self.function_names: dict[int, str] = {}
        self.data_names: dict[int, str] = {}
        r = Reader(data, 8)
        while r.pos < len(data):
            sid = data[r.pos]
            r.pos += 1
            size = r.u32()
            start = r.pos
            name = SECTION_NAMES.get(sid, f"section {sid}")
            if sid == 0:
                name = "custom:" + Reader(data, start).name()
            self.sections.append((name, size))
            s = Reader(data, start, start + size)
            if sid == 2:
                for _ in range(s.u32()):
                    s.name(), s.name()
                    if s.skip_import_desc() == 0:
                        self.imported_functions += 1
            elif sid == 10:
                for _ in range(s.u32()):
                    n = s.u32()
                    self.bodies.append(n)
                    s.pos += n
            elif sid == 11:
                for _ in range(s.u32()):
                    flags = s.u32()
                    if flags == 2:
                        s.u32()
                    if flags in (0, 2):
                        while data[s.pos] != 0x0B:  # the offset expression: i32.const N end
                            s.pos += 1
                        s.pos += 1
                    n = s.u32()
                    self.data_segments.append(n)
                    s.pos += n
            elif name == "custom:name":
                s.name()
                self._names(s)
            r.pos = start + size

    def _names(self, s: Reader) -> None:
        while s.pos < s.end:
            kind = s.data[s.pos]
            s.pos += 1
            size = s.u32()
            end = s.pos + size
            if kind in (1, 9):  # function names, data segment names
                target = self.function_names if kind == 1 else self.data_names
                for _ in range(s.u32()):
                    index = s.u32()
                    target[index] = s.name()
            s.pos = end

    def section(self, name: str) -> int:
        return sum(size for n, size in self.sections if n == name)

    def functions(self) -> list[tuple[int, str, str]]:
        """(code bytes, demangled name, crate) of every defined function."""
        out = []
        for i, size in enumerate(self.bodies):
            index = self.imported_functions + i
            symbol = self.function_names.get(index, f"function[{index}]")
            name = demangle(symbol)
            out.append((size, name, crate_of(name, symbol)))
        return out


ESCAPES = {"SP": "@", "BP": "*", "RF": "&", "LT": "<", "GT": ">", "LP": "(", "RP": ")", "C": ","}


def demangle(symbol: str) -> str:
    """Rust's legacy (`_ZN...17h<hash>E`, without the hash) and v0 (`_R...`, the standard
    library's) manglings; other names as they are."""
    merged = re.match(r"byn\$mgfn-shared\$(.*)", symbol)
    if merged:  # wasm-opt's merge-similar-functions: the shared body of several
        return demangle(merged.group(1)) + " (shared by similar functions)"
    symbol = re.sub(r"(\.llvm\.\d+|\.\d+)$", "", symbol)
    if symbol.startswith("_R"):
        try:
            return V0(symbol[2:]).symbol()
        except (IndexError, ValueError, RecursionError):
            return symbol
    m = re.match(r"_?_ZN(.*)E$", symbol)
    if not m:
        return symbol
    rest, parts = m.group(1), []
    while rest:
        n = re.match(r"\d+", rest)
        if not n:
            return symbol
        length = int(n.group())
        ident, rest = rest[n.end():n.end() + length], rest[n.end() + length:]
        parts.append(ident)
    if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
        parts.pop()

    def unescape(ident: str) -> str:
        if ident.startswith("_$"):
            ident = ident[1:]

        def esc(e: re.Match) -> str:
            code = e.group(1)
            if code in ESCAPES:
                return ESCAPES[code]
            if code.startswith("u"):
                try:
                    return chr(int(code[1:], 16))
                except ValueError:
                    return e.group()
            return e.group()

        return re.sub(r"\$([A-Za-z0-9]+)\$", esc, ident).replace("..", "::")

    return "::".join(unescape(p) for p in parts)


V0_BASIC = {"a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8",
            "i": "isize", "j": "usize", "l": "i32", "m": "u32", "n": "i128", "o": "u128",
            "s": "i16", "t": "u16", "u": "()", "v": "...", "x": "i64", "y": "u64", "z": "!",
            "p": "_"}


class V0:
    """Rust's v0 mangling (RFC 2603), printed as rustc-demangle does without crate hashes."""

    def __init__(self, text: str):
        self.s, self.i = text, 0
        self.crates: list[str] = []  # crate roots in the order parsed: the first defines the item

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        c = self.s[self.i]
        self.i += 1
        return c

    def eat(self, c: str) -> bool:
        if self.peek() == c:
            self.i += 1
            return True
        return False

    def base62(self) -> int:
        if self.eat("_"):
            return 0
        n = 0
        while not self.eat("_"):
            c = self.next()
            n = n * 62 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".index(c)
        return n + 1

    def disambiguator(self) -> int:
        return self.base62() + 1 if self.eat("s") else 0

    def ident(self) -> str:
        self.disambiguator()
        return self.undisambiguated()

    def undisambiguated(self) -> str:
        self.eat("u")  # Punycode: left encoded
        m = re.match(r"0|[1-9]\d*", self.s[self.i:])
        if not m:
            raise ValueError("identifier")
        self.i += m.end()
        self.eat("_")
        n = int(m.group())
        self.i += n
        return self.s[self.i - n:self.i]

    def backref(self, parse):
        target = self.base62()
        saved, self.i = self.i, target
        try:
            return parse()
        finally:
            self.i = saved

    def symbol(self) -> str:
        if self.peek().isdigit():
            self.base62()
        return self.path()

    def path(self) -> str:
        tag = self.next()
        if tag == "C":
            name = self.ident()
            self.crates.append(name)
            return name
        if tag == "M":
            self.disambiguator()
            self.path()
            return f"<{self.type()}>"
        if tag == "X":
            self.disambiguator()
            self.path()
            t = self.type()
            return f"<{t} as {self.path()}>"
        if tag == "Y":
            t = self.type()
            return f"<{t} as {self.path()}>"
        if tag == "N":
            ns = self.next()
            parent = self.path()
            dis = self.disambiguator()
            name = self.undisambiguated()
            if ns.isupper():
                kind = {"C": "closure", "S": "shim"}.get(ns, ns)
                return f"{parent}::{{{kind}{':' + name if name else ''}#{dis}}}"
            return f"{parent}::{name}" if name else parent
        if tag == "I":
            parent = self.path()
            args = []
            while not self.eat("E"):
                args.append(self.generic_arg())
            args = [a for a in args if a]
            return f"{parent}<{', '.join(args)}>" if args else parent
        if tag == "B":
            return self.backref(self.path)
        raise ValueError(f"path tag {tag}")

    def generic_arg(self) -> str:
        if self.eat("L"):
            self.base62()
            return ""
        if self.eat("K"):
            return self.const()
        return self.type()

    def const(self) -> str:
        if self.eat("B"):
            return self.backref(self.const)
        if self.eat("p"):
            return "_"
        t = self.next()
        neg = self.eat("n")
        digits = ""
        while not self.eat("_"):
            digits += self.next()
        if t == "b":
            return "true" if digits == "1" else "false"
        return ("-" if neg else "") + str(int(digits or "0", 16))

    def type(self) -> str:
        c = self.next()
        if c in V0_BASIC:
            return V0_BASIC[c]
        if c == "A":
            t = self.type()
            return f"[{t}; {self.const()}]"
        if c == "S":
            return f"[{self.type()}]"
        if c in "RQ":
            if self.eat("L"):
                self.base62()
            return ("&" if c == "R" else "&mut ") + self.type()
        if c in "PO":
            return ("*const " if c == "P" else "*mut ") + self.type()
        if c == "F":
            if self.eat("G"):
                self.base62()
            self.eat("U")
            if self.eat("K"):
                if not self.eat("C"):
                    self.undisambiguated()
            args = []
            while not self.eat("E"):
                args.append(self.type())
            ret = self.type()
            return f"fn({', '.join(args)})" + ("" if ret == "()" else f" -> {ret}")
        if c == "D":
            if self.eat("G"):
                self.base62()
            traits = []
            while not self.eat("E"):
                t = self.path()
                while self.eat("p"):
                    name = self.undisambiguated()
                    t += f"<{name} = {self.type()}>"
                traits.append(t)
            if self.eat("L"):
                self.base62()
            return "dyn " + " + ".join(traits)
        if c == "T":
            items = []
            while not self.eat("E"):
                items.append(self.type())
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if c == "B":
            return self.backref(self.type)
        self.i -= 1
        return self.path()


def crate_of(name: str, symbol: str = "") -> str:
    """The crate a demangled function name belongs to (see the module's docstring); for a v0
    symbol, the crate of the impl or module that defines it (its first crate root)."""
    symbol = symbol.removeprefix("byn$mgfn-shared$")
    if symbol.startswith("_R"):
        v0 = V0(symbol[2:])
        try:
            v0.symbol()
        except (IndexError, ValueError, RecursionError):
            pass
        if v0.crates:
            return v0.crates[0]
    if name.startswith(("proxy_on_", "proxy_abi_version")):
        return "proxy_wasm"
    if not re.match(r"[<A-Za-z_]", name) or "::" not in name:
        return "(C: wasi-libc's malloc and friends, compiler builtins)"
    if name.startswith("<"):
        inner = name[1:]
        self_type, _, trait = inner.partition(" as ")
        self_type = re.sub(r"^(&mut |&|\*const |\*mut |\[|\(|dyn )+", "", self_type)
        first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", self_type)
        if first and "::" in self_type and first.group() not in BUILTIN_TYPES:
            return first.group()
        first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", trait)
        if first:
            return first.group()
        return "(builtin types)"
    return name.split("::", 1)[0]


def meshrules_module(name: str) -> str:
    """meshrules::MODULE for one of the meshrules crate's own functions."""
    path = re.sub(r"^<(&mut |&)?", "", name)
    parts = path.split("::")
    return "::".join(parts[:2]) if len(parts) > 2 else parts[0]


def flags_text(flags: str) -> str:
    return f"`wasm-opt {flags}`" if flags else "wasm-opt"


def report(named: Path = NAMED, shipped: Path = SHIPPED, raw: Path | None = RAW, top: int = 20,
           flags: str | None = None, levers: Path | None = LEVERS) -> tuple[str, dict]:
    """The markdown section and its numbers."""
    if flags is None:
        recorded = Path(str(named) + ".flags")
        flags = recorded.read_text().strip() if recorded.exists() else ""
    mod = Module(named)
    ship = Module(shipped)
    for sec in ("code", "data"):
        if mod.section(sec) != ship.section(sec):
            raise StaleNames(f"{named} and {shipped} differ in their {sec} section: the named copy "
                             "is not the shipped module's (run `make build`)")
    funcs = mod.functions()
    code = sum(size for size, _, _ in funcs)
    data = sum(mod.data_segments)
    crates: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    modules: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for size, name, crate in funcs:
        c = crates[crate]
        c[0] += size
        c[1] += 1
        if crate == "meshrules":
            m = modules[meshrules_module(name)]
            m[0] += size
            m[1] += 1
    largest = sorted(funcs, key=lambda f: -f[0])
    over_10k = [f for f in largest if f[0] > 10_240]
    other = ship.total - code - data
    summary = {
        "shipped_bytes": ship.total, "raw_bytes": raw.stat().st_size if raw and raw.exists() else None,
        "code_bytes": code, "data_bytes": data, "functions": len(funcs),
        "functions_over_10KiB": len(over_10k),
        "largest": [{"bytes": s, "name": n, "crate": c} for s, n, c in largest[:top]],
        "crates": {k: {"bytes": v[0], "functions": v[1]} for k, v in crates.items()},
        "data_segments": data_by_name(mod),
    }

    def share(n: int) -> str:
        return f"{100 * n / ship.total:.1f}%"

    raw_note = f" (cargo's output: {summary['raw_bytes']:,} bytes)" if summary["raw_bytes"] else ""
    lines = [
        HEADING,
        "",
        "Generated by `bench/size.py` (`make size`, and `make bench` with the rest), from the "
        "module `make build` wrote.",
        "",
        f"- `wasm/meshrules.wasm`: **{ship.total:,} bytes** after {flags_text(flags)}{raw_note}; "
        "target <= 400 KB, no function above ~10 KB of code.",
        f"- Code {code:,} bytes in {len(funcs):,} functions ({share(code)}), data {data:,} bytes "
        f"({share(data)}), the rest {other:,} bytes (section headers, types, imports, exports, "
        "the function and element tables).",
        f"- Functions above 10 KiB of code: {len(over_10k)}"
        + (f" ({', '.join(f'`{short(n)}` {s:,}' for s, n, _ in over_10k)})" if over_10k else "") + ".",
        "",
        f"### The {top} largest functions",
        "",
        "| # | code bytes | function |",
        "|---|---|---|",
    ]
    for i, (size, name, _) in enumerate(largest[:top], 1):
        lines.append(f"| {i} | {size:,} | `{md(name)}` |")
    lines += [
        "",
        "### Size per crate (function code; data separately)",
        "",
        "| crate | code bytes | share of module | functions |",
        "|---|---|---|---|",
    ]
    for name, (size, count) in sorted(crates.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {md(name)} | {size:,} | {share(size)} | {count:,} |")
    seg = ", ".join(f"{k} {v:,}" for k, v in summary["data_segments"].items())
    seg = f"data segments ({seg})" if seg else "data segments"
    lines.append(f"| {md(seg)} | {data:,} | {share(data)} | |")
    lines += [
        "",
        "### meshrules' own code per module",
        "",
        "| module | code bytes | functions |",
        "|---|---|---|",
    ]
    for name, (size, count) in sorted(modules.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {md(name)} | {size:,} | {count:,} |")
    if levers and levers.exists():
        lines += ["", levers.read_text().strip()]
    lines.append("")
    return "\n".join(lines), summary


def data_by_name(mod: Module) -> dict[str, int]:
    """Data bytes by segment name without the linker's numbering (.rodata.12 is .rodata)."""
    out: dict[str, int] = defaultdict(int)
    for i, n in enumerate(mod.data_segments):
        out[re.sub(r"\.\d+$", "", mod.data_names.get(i, "unnamed"))] += n
    return dict(out)


def short(name: str) -> str:
    return md(re.sub(r"<[^<>]*(<[^<>]*>[^<>]*)*>", "<..>", name) if len(name) > 80 else name)


def md(text: str) -> str:
    return text.replace("|", "\\|")


def _span(text: str, heading: str) -> tuple[int, int] | None:
    """Where the section under `heading` is: to the next `## ` heading or the end."""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return None
    nxt = text.find("\n## ", start + 1 + len(heading))
    return start + 1, (nxt if nxt >= 0 else len(text))


def section_of(path: Path, heading: str) -> str:
    """The section under `heading` in the file, or "" when it has none."""
    text = path.read_text() if path.exists() else ""
    span = _span(text, heading)
    return text[span[0]:span[1]] if span else ""


def update(path: Path, section: str, heading: str = HEADING) -> None:
    """Replaces the section under `heading` or appends it."""
    text = path.read_text() if path.exists() else ""
    span = _span(text, heading)
    if span is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = text[:span[0]] + section + text[span[1]:]
    path.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--named", type=Path, default=NAMED, help="wasm-opt output with its name section")
    p.add_argument("--shipped", type=Path, default=SHIPPED, help="the stripped module Envoy loads")
    p.add_argument("--raw", type=Path, default=RAW, help="cargo's output, before wasm-opt")
    p.add_argument("--wasm-opt-flags", help="the flags the module was optimized with (default: "
                   "what `make build` recorded beside the named copy)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--levers", type=Path, default=LEVERS)
    p.add_argument("--update", type=Path, help="write the section into this markdown file")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON instead")
    args = p.parse_args()
    for path in (args.named, args.shipped):
        if not path.exists():
            print(f"missing {path}: run `make build`", file=sys.stderr)
            return 2
    try:
        text, summary = report(args.named, args.shipped, args.raw, args.top, args.wasm_opt_flags, args.levers)
    except StaleNames as e:
        print(e, file=sys.stderr)
        return 1
    if args.update:
        update(args.update, text)
    print(json.dumps(summary, indent=1) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
