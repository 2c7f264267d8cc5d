"""Version ordering and `--where` conditions on fingerprint fields (pure Python).

CANN and Ascend driver versions order as Huawei numbers them, release candidates before the
release: 8.0.RC1 < 8.0.RC2 < 8.0.0 < 8.1.RC1 (driver: 24.1.rc1 < 24.1.0). Python packages order
by PEP 440 (2.9.0 < 2.9.0.post1, 0.18.0rc1 < 0.18.0).

    where = parse_where("cann>=8.5")
    where.matches({"cann": "8.5.1"})   # True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

# Fields compared as Huawei versions; the other version fields by PEP 440.
HUAWEI_FIELDS = {"cann", "driver"}
PEP440_FIELDS = {"python", "torch", "torch_npu", "vllm", "vllm_ascend", "transformers", "cuda"}
VERSION_FIELDS = HUAWEI_FIELDS | PEP440_FIELDS
# The order `cmp history` sorts runs in: the stack from the bottom up, then time.
HISTORY_ORDER = ("cann", "vllm_ascend", "vllm", "torch_npu")

_OPS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}
_WHERE = re.compile(r"^\s*([a-z_]+)\s*(==|!=|>=|<=|>|<|=)\s*(.+?)\s*$")


class WhereError(ValueError):
    """A --where condition that cannot be understood."""


def huawei_key(version: str) -> tuple:
    """Sort key: numbers as numbers, and "RCn" (any case) before the release it leads to."""
    key = []
    for part in re.split(r"[.\-_]", version.strip()):
        if part.isdigit():
            key.append((1, int(part), ""))
        elif m := re.fullmatch(r"(?i)(rc|alpha|beta|t)(\d*)", part):
            key.append((0, int(m.group(2) or 0), m.group(1).lower()))
        else:
            digits = re.match(r"\d+", part)
            key.append((1, int(digits.group()), part) if digits else (0, 0, part.lower()))
    # The end sorts after pre-release parts and before numbers: 8.1.RC1.alpha001 < 8.1.RC1 < 8.1.RC1.1.
    key.append((0.5, 0, ""))
    return tuple(key)


def pep440_key(version: str):
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, huawei_key(version))


def version_key(field: str, value: str):
    """Sort key of a fingerprint field's value; empty values sort first."""
    if not value:
        return (0,)
    return (1, huawei_key(value) if field in HUAWEI_FIELDS else pep440_key(value))


@dataclass(frozen=True)
class Where:
    field: str
    op: str
    value: str

    def matches(self, fingerprint: dict[str, str]) -> bool:
        have = fingerprint.get(self.field, "")
        if self.field in VERSION_FIELDS:
            if not have:
                return self.op == "!="
            return _OPS[self.op](version_key(self.field, have), version_key(self.field, self.value))
        return _OPS[self.op](have, self.value)


def parse_where(expr: str, fields=None) -> Where:
    """'cann>=8.5' -> Where("cann", ">=", "8.5"); ordering needs a version field."""
    m = _WHERE.match(expr)
    if not m:
        raise WhereError(f"--where {expr!r}: expected FIELD OP VALUE, e.g. 'cann>=8.5' or 'vllm_ascend==0.18.0'")
    field, op, value = m.group(1), m.group(2), m.group(3).strip("'\"")
    op = "==" if op == "=" else op
    if fields is not None and field not in fields:
        raise WhereError(f"--where {expr!r}: unknown field {field!r}; fields: {', '.join(sorted(fields))}")
    if op not in ("==", "!=") and field not in VERSION_FIELDS:
        raise WhereError(f"--where {expr!r}: {field} is not a version; use == or !=")
    return Where(field, op, value)
