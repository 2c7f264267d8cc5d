"""Versions sort as their projects number them, and --where conditions use that order."""

import pytest

from compare_server.versions import WhereError, huawei_key, parse_where, version_key


def test_cann_release_candidates_come_before_their_release():
    ordered = ["8.0.RC1", "8.0.RC2", "8.0.0", "8.1.RC1.alpha001", "8.1.RC1", "8.3.RC1", "8.5", "8.5.0", "8.5.1", "25.5.2"]
    assert sorted(reversed(ordered), key=lambda v: version_key("cann", v)) == ordered
    assert sorted(["8.1.RC1", "8.0.0", "8.0.RC2", "8.0.RC1"], key=huawei_key) == ["8.0.RC1", "8.0.RC2", "8.0.0", "8.1.RC1"]
    assert huawei_key("8.5.1") > huawei_key("8.5") > huawei_key("8.3.RC1")


def test_driver_versions_in_lower_case_sort_the_same_way():
    assert sorted(["25.0.rc1.1", "24.1.rc1", "24.1.0", "25.0.rc1"], key=huawei_key) == ["24.1.rc1", "24.1.0", "25.0.rc1", "25.0.rc1.1"]


def test_python_packages_sort_by_pep_440():
    ordered = ["0.9.2", "0.10.0", "0.18.0rc1", "0.18.0", "0.18.0.post1"]
    assert sorted(ordered[::-1], key=lambda v: version_key("vllm", v)) == ordered
    assert version_key("torch_npu", "2.9.0.post1+gitee7ba04") > version_key("torch_npu", "2.9.0")


@pytest.mark.parametrize("expr, fingerprint, expected", [
    ("cann>=8.5", {"cann": "8.5.1"}, True),
    ("cann>=8.5", {"cann": "8.1.RC1"}, False),
    ("cann<8.0.0", {"cann": "8.0.RC2"}, True),
    ("cann>=8.3", {"cann": "8.3.RC1"}, False),  # a release candidate comes before its release
    ("cann>=8.5", {"cann": ""}, False),
    ("vllm_ascend==0.18.0", {"vllm_ascend": "0.18.0"}, True),
    ("vllm_ascend==0.18.0", {"vllm_ascend": "0.18.0rc1"}, False),
    ("torch_npu>2.8", {"torch_npu": "2.9.0.post1+gitee7ba04"}, True),
    ("device=npu:0", {"device": "npu:0"}, True),
    ("chip!=Ascend910B3 x8", {"chip": "Ascend910_9362 x16"}, True),
])
def test_where_conditions(expr, fingerprint, expected):
    assert parse_where(expr).matches(fingerprint) is expected


@pytest.mark.parametrize("expr, message", [
    ("cann", "expected FIELD OP VALUE"),
    ("host>=a", "host is not a version"),
    ("nope==1", "unknown field 'nope'"),
])
def test_bad_where_conditions_say_what_is_expected(expr, message):
    with pytest.raises(WhereError, match=message):
        parse_where(expr, fields={"cann", "host", "device"})
