"""Build a batch embedding input from a corpus this machine already has: the standard library's docstrings.

Each public module, class and function of the Python standard library with a docstring
becomes one passage (its qualified name and the docstring's first paragraph), written as an
OpenAI Batch API input line for `/v1/embeddings` with the qualified name as `custom_id`.
With `--chunk-sentences N` a passage is the docstring's first paragraphs (up to
`MAX_CHUNKED_CHARS`), split into chunks of N sentences: one line per passage, its `input` the
list of chunks (one embedding each), for a nested `chunks` index.
Sources are parsed with `ast`, never imported, so nothing runs and nothing is downloaded.

    python scripts/demo_corpus.py --out input.jsonl [--limit N] [--modules argparse,json]
                                  [--chunk-sentences N]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

MODEL = "all-MiniLM-L6-v2"
MAX_CHARS = 600
MAX_CHUNKED_CHARS = 2000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'\"(])")


def _first_paragraph(docstring: str, paragraphs: int = 1, limit: int = MAX_CHARS) -> str:
    text = " ".join(docstring.strip().split("\n\n")[:paragraphs])
    return " ".join(text.split())[:limit]


def chunks_of(text: str, sentences: int) -> list[str]:
    """`text` cut into chunks of `sentences` sentences each (the last may have fewer)."""
    found = [part for part in _SENTENCE_END.split(text) if part.strip()]
    return [" ".join(found[start : start + sentences]) for start in range(0, len(found), sentences)]


def _source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def passages(sources: list[tuple[str, Path]], paragraphs: int = 1) -> Iterator[tuple[str, str]]:
    """(qualified name, passage text) for each documented public module, class and function: its
    docstring's first `paragraphs` paragraphs (more than one: up to `MAX_CHUNKED_CHARS`)."""
    limit = MAX_CHARS if paragraphs == 1 else MAX_CHUNKED_CHARS
    for module, path in sources:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        docstring = ast.get_docstring(tree)
        if docstring:
            yield module, f"{module}: {_first_paragraph(docstring, paragraphs, limit)}"
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                docstring = ast.get_docstring(node)
                if docstring and len(docstring) > 20:
                    text = _first_paragraph(docstring, paragraphs, limit)
                    yield f"{module}.{node.name}", f"{module}.{node.name}: {text}"


def module_sources(names: list[str]) -> list[tuple[str, Path]]:
    """(module name, source file) of the named modules and, for packages, of their submodules.

    Only top-level modules are looked up (`find_spec`); submodules are found as files, so no
    package code is imported. Private modules, tests and demos are left out.
    """
    sources = []
    for name in names:
        path = _source_file(name)
        if path is None:
            continue
        sources.append((name, path))
        if path.name == "__init__.py":
            for child in sorted(path.parent.rglob("*.py")):
                parts = child.relative_to(path.parent).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                if parts and not any(part.startswith("_") or "test" in part for part in parts):
                    sources.append((".".join((name, *parts)), child))
    return sources


def stdlib_modules() -> list[str]:
    """The public top-level standard-library modules."""
    return [
        name
        for name in sorted(sys.stdlib_module_names)
        if not name.startswith("_") and name not in ("antigravity", "this", "idlelib", "test")
    ]


def batch_line(custom_id: str, text: str | list[str]) -> dict:
    """The batch input line of one passage: `text`, or its chunks (one embedding per chunk)."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": MODEL, "input": [text] if isinstance(text, str) else text},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the batch input JSONL to write")
    parser.add_argument("--limit", type=int, help="at most this many passages")
    parser.add_argument("--modules", help="comma-separated modules (default: the whole standard library)")
    parser.add_argument(
        "--chunk-sentences", type=int, help="split each passage into chunks of this many sentences"
    )
    args = parser.parse_args(argv)
    if args.chunk_sentences is not None and args.chunk_sentences < 1:
        parser.error("--chunk-sentences must be at least 1")
    sources = module_sources(args.modules.split(",") if args.modules else stdlib_modules())
    count = 0
    with open(args.out, "w") as out:
        for custom_id, text in passages(sources, 1 if args.chunk_sentences is None else 3):
            passage = text if args.chunk_sentences is None else chunks_of(text, args.chunk_sentences)
            out.write(json.dumps(batch_line(custom_id, passage)) + "\n")
            count += 1
            if args.limit and count >= args.limit:
                break
    print(json.dumps({"passages": count, "modules": len(sources), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
