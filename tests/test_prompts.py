"""Prompt sets: the reports' prompts are built in, and a set's digest follows its content only."""

import json

import pytest

from capture_agent.prompts import PromptSetError, builtin_names, load_prompt_set


def test_the_reports_prompt_sets_are_built_in_with_their_sizes():
    sizes = {name: len(load_prompt_set(name).prompts) for name in builtin_names()}
    assert sizes == {"multilingual-24": 24, "nomic-11": 11, "qwen-11": 11, "rag-25": 25}
    rag = load_prompt_set("rag-25").prompts
    assert rag[0].text == "What is RAG in AI?" and rag[-1].text == "What is the future of retrieval-augmented generation?"
    assert [p.text for p in load_prompt_set("qwen-11").prompts][-3:] == ["法国的首都是", "机器学习是一种", "人工智能将会"]


def test_the_multilingual_set_has_a_long_prompt_of_about_500_tokens(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    longest = max(len(tokenizer(p.text).input_ids) for p in load_prompt_set("multilingual-24").prompts)
    assert 400 <= longest <= 700


def test_the_digest_depends_on_the_prompts_not_on_the_file_name(tmp_path):
    ps = load_prompt_set("nomic-11")
    lines = "\n".join(json.dumps({"id": p.id, "text": p.text}, ensure_ascii=False) for p in ps.prompts)
    (tmp_path / "mine.jsonl").write_text(lines, encoding="utf-8")
    copy = load_prompt_set(str(tmp_path / "mine.jsonl"))
    assert copy.name == "mine" and copy.digest == ps.digest
    (tmp_path / "edited.jsonl").write_text(lines.replace("nice", "fine"), encoding="utf-8")
    assert load_prompt_set(str(tmp_path / "edited.jsonl")).digest != ps.digest


@pytest.mark.parametrize("content, message", [
    ('{"id": 1}', 'with "id" and "text"'),
    ("not json", 'with "id" and "text"'),
    ('{"id": "a", "text": ""}', "non-empty string"),
    ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}', "duplicate prompt id 'a'"),
    ("", "no prompts"),
])
def test_bad_jsonl_files_are_refused_with_file_and_line(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(str(f))


def test_an_unknown_name_lists_the_built_in_sets():
    with pytest.raises(PromptSetError, match="rag-25"):
        load_prompt_set("no-such-set")
