"""Prompt sets: the fixed inputs every device runs, versioned by content.

A prompt set is a name plus an ordered list of prompts ({"id", "text"}). Its digest is the
sha256 of the canonical JSON of the prompts, so two runs are comparable exactly when their
digests match, whatever the sets were called.

    >>> ps = load_prompt_set("rag-25")
    >>> len(ps.prompts)
    25
"""

from __future__ import annotations

import functools
import json
import pathlib
from dataclasses import dataclass

from proto.digests import prompt_digest

BUILTIN_DIR = pathlib.Path(__file__).parent / "prompt_sets"

# What each built-in set reproduces, shown by `cmp prompts`.
BUILTIN_DESCRIPTIONS = {
    "multilingual-24": "English, Chinese, French, punctuation, numbers, short and ~500-token long (MiniLM / llm-embedder reports)",
    "nomic-11": "the 11 sentences of the nomic-embed-text-v1 report",
    "qwen-11": "the 8 English and 3 Chinese prompts of the Qwen3.5-0.8B report",
    "rag-25": "the 25 RAG questions of the Pleias-RAG-350M report",
}


class PromptSetError(ValueError):
    """A prompt set that cannot be found or read."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]

    @functools.cached_property
    def digest(self) -> str:
        return prompt_digest((p.id, p.text) for p in self.prompts)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def load_prompt_set(name_or_file: str) -> PromptSet:
    """Loads a built-in set by name, or a JSONL file of {"id": ..., "text": ...} lines."""
    builtin = BUILTIN_DIR / f"{name_or_file}.jsonl"
    if builtin.is_file():
        return _read_jsonl(builtin, name_or_file)
    path = pathlib.Path(name_or_file)
    if path.is_file():
        return _read_jsonl(path, path.stem)
    raise PromptSetError(
        f"no prompt set {name_or_file!r}: give a built-in name ({', '.join(builtin_names())}) or a JSONL file"
    )


def _read_jsonl(path: pathlib.Path, name: str) -> PromptSet:
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            pid, text = str(obj["id"]), obj["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PromptSetError(f"{path}:{lineno}: expected a JSON object with \"id\" and \"text\"") from None
        if not isinstance(text, str) or not text:
            raise PromptSetError(f"{path}:{lineno}: \"text\" must be a non-empty string")
        if pid in seen:
            raise PromptSetError(f"{path}:{lineno}: duplicate prompt id {pid!r}")
        seen.add(pid)
        prompts.append(Prompt(pid, text))
    if not prompts:
        raise PromptSetError(f"{path}: no prompts")
    return PromptSet(name, tuple(prompts))
