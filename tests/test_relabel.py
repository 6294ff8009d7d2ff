"""Tests of relay.relabel against Prometheus' own expectations (model/relabel/relabel_test.go, 3.x).

The first block of RELABEL_CASES mirrors Prometheus' TestRelabel case by case; later blocks add edge
cases whose expected output was worked out from Prometheus' code (relabel.go, Go's Regexp.Expand,
labels.Builder) by hand.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import pytest
import re2
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import ConfigError
from relay.relabel import (
    Regex,
    RelabelConfig,
    Relabeler,
    compile_regex,
    parse_relabel_configs,
    relabel,
)

Raw = dict[str, Any]


def configs(*raw: Raw, scheme: str = "legacy") -> tuple[RelabelConfig, ...]:
    return parse_relabel_configs(list(raw), "relabel_configs", name_validation=scheme)  # type: ignore[arg-type]


ABC = {"a": "foo", "b": "bar", "c": "baz"}
PORTS = {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"}
LINES = {"a": "line1\nline2", "b": "bar", "c": "baz"}

# (input labels, raw configs, expected labels or None when dropped)
RELABEL_CASES: list[Any] = [
    # ---- Prometheus TestRelabel, in its order ----
    pytest.param(
        ABC,
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {**ABC, "d": "choo-choo"},
        id="prom-replace-braced-refs",
    ),
    pytest.param(
        ABC,
        [
            {
                "source_labels": ["a", "b"],
                "regex": "f(.*);(.*)r",
                "target_label": "a",
                "replacement": "b${1}${2}m",
            },
            {
                "source_labels": ["c", "a"],
                "regex": "(b).*b(.*)ba(.*)",
                "target_label": "d",
                "replacement": "$1$2$2$3",
            },
        ],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
        id="prom-replace-chained",
    ),
    pytest.param(
        {"a": "foo"},
        [
            {"source_labels": ["a"], "regex": ".*o.*", "action": "drop"},
            {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch$1-ch$1"},
        ],
        None,
        id="prom-drop-then-replace",
    ),
    pytest.param(
        {"a": "foo", "b": "bar"},
        [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}],
        None,
        id="prom-drop",
    ),
    pytest.param(
        {"a": "abc"},
        [{"source_labels": ["a"], "regex": ".*(b).*", "target_label": "d", "replacement": "$1"}],
        {"a": "abc", "d": "b"},
        id="prom-replace-middle-group",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "no-match", "action": "drop"}],
        {"a": "foo"},
        id="prom-drop-no-match",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "f|o", "action": "drop"}],
        {"a": "foo"},
        id="prom-drop-anchored-alternation",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}],
        None,
        id="prom-keep-no-match",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}],
        {"a": "foo"},
        id="prom-keep-match",
    ),
    pytest.param(
        {"a": "boo"},
        [{"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"}],
        {"a": "boo"},
        id="prom-replace-no-match-no-change",
    ),
    pytest.param(
        {"a": "foo", "f": "baz"},
        [{"source_labels": ["a"], "regex": "(f).*", "target_label": "$1", "replacement": "$2"}],
        {"a": "foo"},
        id="prom-blank-replacement-deletes",
    ),
    pytest.param(
        ABC,
        [{"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {**ABC, "d": "976"},
        id="prom-hashmod-976",
    ),
    pytest.param(
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
        id="prom-hashmod-734",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
        id="prom-labelmap",
    ),
    pytest.param(
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {
            "a": "foo",
            "__meta_my_bar": "aaa",
            "__meta_my_baz": "bbb",
            "__meta_other": "ccc",
            "my_bar": "aaa",
            "my_baz": "bbb",
        },
        id="prom-labelmap-meta",
    ),
    pytest.param(
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${2}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value", "name": "value"},
        id="prom-target-from-group",
    ),
    pytest.param(
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${3}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value"},
        id="prom-missing-group-replacement-empty",
    ),
    pytest.param(
        {"a": "some-name-0"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)(-[^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
        ],
        {"a": "some-name-0"},
        id="prom-invalid-expanded-target-skipped",
    ),
    pytest.param(
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)path:(/[^,]+).*",
                "replacement": "${1}",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)job:([^,]+).*",
                "replacement": "${1}",
                "target_label": "job",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
                "replacement": "${2}",
                "target_label": "${1}",
            },
        ],
        {
            "__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar",
            "__metrics_path__": "/secret",
            "job": "some-job",
            "foo": "bar",
        },
        id="prom-sd-tags",
    ),
    pytest.param(
        {
            "__meta_kubernetes_pod_container_port_name": "foo",
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
        },
        [
            {"regex": "^__meta_kubernetes_pod_container_port_name$", "action": "labeldrop"},
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_XXX_metrics_port"],
                "regex": "(.+)",
                "replacement": "metrics",
                "target_label": "__meta_kubernetes_pod_container_port_name",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "^metrics$",
                "action": "keep",
            },
        ],
        {
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
            "__meta_kubernetes_pod_container_port_name": "metrics",
        },
        id="prom-issue-12283-drop-then-set",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
        id="prom-labelkeep",
    ),
    pytest.param(
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labeldrop"}],
        {"a": "foo"},
        id="prom-labeldrop",
    ),
    pytest.param(
        {"foo": "bAr123Foo"},
        [
            {"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
            {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"},
        ],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
        id="prom-upper-lower",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}],
        PORTS,
        id="prom-keepequal-equal",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}],
        None,
        id="prom-dropequal-equal",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}],
        PORTS,
        id="prom-dropequal-differs",
    ),
    pytest.param(
        PORTS,
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}],
        None,
        id="prom-keepequal-differs",
    ),
    pytest.param(
        LINES,
        [{"source_labels": ["a"], "regex": "line1.*line2", "target_label": "d", "replacement": "match${1}"}],
        {**LINES, "d": "match"},
        id="prom-dot-matches-newline",
    ),
    pytest.param(
        LINES,
        [
            {
                "source_labels": ["a"],
                "regex": "(line1).*(?<second>line2)",
                "target_label": "label1_${1}",
                "replacement": "val_${second}",
            },
            {
                "source_labels": ["a"],
                "regex": "(line1).*(?<second>line2)",
                "target_label": "label2_$1",
                "replacement": "val_$second",
            },
        ],
        {**LINES, "label1_line1": "val_line2", "label2_line1": "val_line2"},
        id="prom-named-group-var-styles",
    ),
    pytest.param(
        {"__name__": "http_requests_total"},
        [
            {
                "source_labels": ["__name__"],
                "regex": ".*_total$",
                "target_label": "__type__",
                "replacement": "counter",
            }
        ],
        {"__name__": "http_requests_total", "__type__": "counter"},
        id="prom-name-suffix-type",
    ),
    pytest.param(
        {"__name__": "disk_usage_bytes"},
        [
            {
                "source_labels": ["__name__"],
                "regex": ".*_bytes$",
                "target_label": "__unit__",
                "replacement": "bytes",
            }
        ],
        {"__name__": "disk_usage_bytes", "__unit__": "bytes"},
        id="prom-name-suffix-unit",
    ),
    # ---- $-expansion (Go's Regexp.Expand) ----
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "$1x"}],
        {"a": "foo"},
        id="expand-$1x-is-group-named-1x-so-empty-deletes",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "${1}x"}],
        {"a": "foo", "x": "fx"},
        id="expand-braced-then-text",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "$1-$2"}],
        {"a": "foo", "x": "f-oo"},
        id="expand-dash-ends-name",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "$$1"}],
        {"a": "foo", "x": "$1"},
        id="expand-dollar-dollar",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "a$"}],
        {"a": "foo", "x": "a$"},
        id="expand-trailing-dollar-literal",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "${1"}],
        {"a": "foo", "x": "${1"},
        id="expand-unclosed-brace-literal",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "$-${}"}],
        {"a": "foo", "x": "$-${}"},
        id="expand-empty-names-literal",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "<$0>"}],
        {"a": "foo", "x": "<foo>"},
        id="expand-$0-whole-match",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)(o+)", "target_label": "x", "replacement": "[$01][$10][$2]"}],
        {"a": "foo", "x": "[][][oo]"},
        id="expand-leading-zero-and-out-of-range",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(?P<01>f)oo", "target_label": "x", "replacement": "$01"}],
        {"a": "foo", "x": "f"},
        id="expand-$01-is-a-name",
    ),
    pytest.param(
        {"a": "foo"},
        [
            {
                "source_labels": ["a"],
                "regex": "(?P<n>x)?(?P<n>f)oo",
                "target_label": "x",
                "replacement": "${n}",
            }
        ],
        {"a": "foo", "x": "f"},
        id="expand-duplicate-name-first-matched",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(x)?foo", "target_label": "x", "replacement": "[$1]"}],
        {"a": "foo", "x": "[]"},
        id="expand-unmatched-group-empty",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "(f)oo", "target_label": "x", "replacement": "${1}é$1é"}],
        {"a": "foo", "x": "fé"},
        id="expand-unicode-letter-continues-name",
    ),
    pytest.param(
        {"a": "abc-9"},
        [
            {
                "source_labels": ["a"],
                "regex": "([a-z]+)-([0-9])",
                "target_label": "${1}_$2",
                "replacement": "v",
            }
        ],
        {"a": "abc-9", "abc_9": "v"},
        id="expand-target-label-dollar-name-takes-underscore",
    ),
    pytest.param(
        {"a": "abc-9"},
        [{"source_labels": ["a"], "regex": "([a-z]+)-([0-9])", "target_label": "${2}", "replacement": "v"}],
        {"a": "abc-9"},
        id="expand-target-starting-with-digit-skipped",
    ),
    # ---- empty values, missing labels, separator, anchoring ----
    pytest.param(
        {"a": "foo"},
        [{"target_label": "env", "replacement": "prod"}],
        {"a": "foo", "env": "prod"},
        id="static-label-no-sources",
    ),
    pytest.param(
        {"a": "foo", "env": "x"},
        [{"target_label": "env", "replacement": ""}],
        {"a": "foo"},
        id="static-empty-deletes",
    ),
    pytest.param(
        {"a": "foo", "b": ""},
        [{"source_labels": ["a"], "target_label": "c"}],
        {"a": "foo", "c": "foo"},
        id="input-empty-value-removed",
    ),
    pytest.param({"a": "foo", "b": ""}, [], {"a": "foo"}, id="no-rules-still-removes-empty-values"),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a", "missing"], "target_label": "c"}],
        {"a": "foo", "c": "foo;"},
        id="missing-source-is-empty",
    ),
    pytest.param(
        {"a": "x", "b": "y"},
        [{"source_labels": ["a", "b"], "separator": "/", "target_label": "c"}],
        {"a": "x", "b": "y", "c": "x/y"},
        id="custom-separator",
    ),
    pytest.param(
        {"a": "x", "b": "y"},
        [{"source_labels": ["a", "b"], "separator": "", "target_label": "c"}],
        {"a": "x", "b": "y", "c": "xy"},
        id="empty-separator",
    ),
    pytest.param(
        {"a": "x", "b": "y"},
        [{"source_labels": ["a", "b"], "separator": None, "target_label": "c"}],
        {"a": "x", "b": "y", "c": "xy"},
        id="null-separator-is-empty-like-go-yaml",
    ),
    pytest.param(
        {"a": "foo"},
        [
            {"source_labels": ["a"], "target_label": "a", "replacement": "${1}"},
            {"source_labels": ["a"], "regex": "", "action": "drop"},
        ],
        {"a": "foo"},
        id="regex-empty-matches-only-empty",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["nope"], "regex": "", "action": "drop"}],
        None,
        id="drop-when-label-missing",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": None, "action": "drop"}],
        {"a": "foo"},
        id="null-regex-is-empty-regex",
    ),
    pytest.param(
        {"a": "foo"},
        [{"source_labels": ["a"], "regex": "o+", "action": "drop"}],
        {"a": "foo"},
        id="anchored-no-partial-match",
    ),
    pytest.param(
        {"a": "foo\n"},
        [{"source_labels": ["a"], "regex": "foo$", "action": "drop"}],
        {"a": "foo\n"},
        id="dollar-is-end-of-text-not-before-newline",
    ),
    pytest.param(
        {"a": "Foo"},
        [{"source_labels": ["a"], "regex": "(?i)foo", "action": "keep"}],
        {"a": "Foo"},
        id="case-insensitive-flag",
    ),
    pytest.param(
        {"a": "b"},
        [{"source_labels": ["a"], "regex": "a(?i)x|B", "action": "keep"}],
        {"a": "b"},
        id="flag-scope-go-alternation",
    ),  # a(?i:x)|(?i:B)
    pytest.param(
        {"a": "١٢"},
        [{"source_labels": ["a"], "regex": "\\d+", "action": "drop"}],
        {"a": "١٢"},
        id="perl-class-ascii-only",
    ),
    pytest.param(
        {"a": "ab"},
        [{"source_labels": ["a"], "regex": "a{,1}b", "action": "drop"}],
        {"a": "ab"},
        id="brace-not-repeat-is-literal",
    ),
    pytest.param(
        {"a": "aab"},
        [{"source_labels": ["a"], "regex": "(?U)(a+)(.*)", "target_label": "x", "replacement": "$1|$2"}],
        {"a": "aab", "x": "a|ab"},
        id="ungreedy-flag",
    ),
    pytest.param(
        {"a": "x.y"},
        [{"source_labels": ["a"], "regex": "\\Qx.y\\E", "action": "keep"}],
        {"a": "x.y"},
        id="quoted-literal",
    ),
    pytest.param(
        {"a": "Ab1"},
        [{"source_labels": ["a"], "regex": "[[:upper:]][[:lower:]]\\pN", "action": "keep"}],
        {"a": "Ab1"},
        id="posix-and-unicode-classes",
    ),
    # ---- actions: edges ----
    pytest.param(
        {"a": "x"},
        [{"source_labels": ["a"], "target_label": "b", "action": "Replace"}],
        {"a": "x", "b": "x"},
        id="action-case-insensitive",
    ),
    pytest.param(
        {"a": "x"},
        [{"source_labels": ["m1", "m2"], "action": "keepequal", "target_label": "m3"}],
        None,
        id="keepequal-missing-vs-separator-joined",
    ),
    pytest.param(
        {"a": "x"},
        [{"source_labels": ["m1"], "action": "dropequal", "target_label": "m2"}],
        None,
        id="dropequal-both-missing-are-equal",
    ),
    pytest.param(
        {"a": "x", "t": "y"},
        [{"source_labels": ["missing"], "action": "lowercase", "target_label": "t"}],
        {"a": "x"},
        id="lowercase-empty-deletes",
    ),
    pytest.param(
        {"a": "ßİx"},
        [
            {"source_labels": ["a"], "action": "uppercase", "target_label": "u"},
            {"source_labels": ["a"], "action": "lowercase", "target_label": "l"},
        ],
        {"a": "ßİx", "u": "ßİX", "l": "ßix"},
        id="case-mapping-is-go-simple-mapping",
    ),
    pytest.param(
        {"__address__": "10.132.183.40:80"},
        [{"source_labels": ["__address__"], "target_label": "h", "action": "hashmod", "modulus": 3}],
        {"__address__": "10.132.183.40:80", "h": "1"},
        id="hashmod-3",
    ),
    pytest.param(
        {},
        [{"target_label": "h", "action": "hashmod", "modulus": 2**64 - 1}],
        {"h": "16825458760271544958"},
        id="hashmod-empty-string-md5-tail-uint64",
    ),  # md5("") = d41d8cd98f00b204 e9800998ecf8427e
    pytest.param(
        {"a": "foo", "b": "bar"},
        [{"source_labels": ["a", "b"], "target_label": "h", "action": "hashmod", "modulus": 1000}],
        {"a": "foo", "b": "bar", "h": "750"},
        id="hashmod-joined-sources",
    ),
    pytest.param(
        {"__name__": "up", "job": "etcd"},
        [{"regex": "job", "action": "labelkeep"}],
        {"job": "etcd"},
        id="labelkeep-can-drop-name",
    ),
    pytest.param(
        {"x_a": "1", "y_a": "2"},
        [{"regex": "[xy]_(a)", "replacement": "$1", "action": "labelmap"}],
        {"x_a": "1", "y_a": "2", "a": "2"},
        id="labelmap-collision-last-in-name-order-wins",
    ),
    pytest.param(
        {"b": "1", "a": "2"},
        [{"regex": "(.)", "replacement": "b", "action": "labelmap"}],
        {"a": "2", "b": "1"},
        id="labelmap-iterates-a-snapshot",
    ),  # a -> b=2, then b (snapshot value 1) -> b=1
    pytest.param(
        {"a": "1"},
        [
            {"target_label": "z", "replacement": "9"},
            {"source_labels": ["a"], "target_label": "b"},
            {"regex": "(.)", "replacement": "c", "action": "labelmap"},
        ],
        {"a": "1", "b": "1", "c": "1", "z": "9"},
        id="labelmap-added-labels-come-last-in-set-order",
    ),  # a, z, b -> c=1
    pytest.param(
        {"a": "1", "b": "2"},
        [
            {"target_label": "a", "replacement": "3"},
            {"regex": "(.)", "replacement": "c", "action": "labelmap"},
        ],
        {"a": "3", "b": "2", "c": "3"},
        id="labelmap-relabeled-input-label-moves-last",
    ),  # b, then a (set by a rule)
    pytest.param(
        {"a": "1", "e": ""},
        [{"regex": "(e)", "replacement": "a", "action": "labelmap"}],
        {"a": "1"},
        id="labelmap-ignores-empty-input-value",
    ),  # Builder.Reset puts e="" in del from the start, so Range never yields it
]


@pytest.mark.parametrize(("labels", "raw", "expected"), RELABEL_CASES)
def test_relabel(labels: dict[str, str], raw: list[Raw], expected: dict[str, str] | None) -> None:
    cfgs = configs(*raw)
    before = dict(labels)
    assert relabel(labels, cfgs) == expected
    assert Relabeler(cfgs)(labels) == expected
    assert labels == before  # the input is never modified


def test_case_count_covers_every_action() -> None:
    assert len(RELABEL_CASES) >= 40
    used = {c.get("action", "replace").lower() for p in RELABEL_CASES for c in p.values[1]}
    assert used == {
        "replace",
        "keep",
        "drop",
        "keepequal",
        "dropequal",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
    }


def test_flag_scope_lasts_past_alternation() -> None:
    # Go: a(?i)x|B  ==  a(?i:x) | (?i:B)   (the flag holds to the end of the group, across |)
    rx = compile_regex("a(?i)x|B")
    assert [bool(rx.match(s)) for s in ("aX", "ax", "b", "B", "AX", "aXb")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


def test_utf8_name_validation() -> None:
    cfgs = configs(
        {
            "source_labels": ["utf-8.label"],
            "regex": "line1.*line2",
            "target_label": "d",
            "replacement": "match${1}",
        },
        {
            "source_labels": ["a"],
            "regex": "line1.*line2",
            "target_label": "utf-8.label${1}",
            "replacement": "match${1}",
        },
        scheme="utf8",
    )
    out = relabel({"utf-8.label": "line1\nline2", "a": "line1\nline2"}, cfgs)
    assert out == {"utf-8.label": "match", "a": "line1\nline2", "d": "match"}
    with pytest.raises(ConfigError, match="target_label"):
        configs({"target_label": "utf-8.label", "replacement": "x"})


# ---- Relabeler --------------------------------------------------------------------------------


def test_no_rules_is_identity() -> None:
    labels = {"__name__": "up", "job": "etcd"}
    assert Relabeler(())(labels) is labels
    assert not Relabeler(())
    assert relabel(labels, []) == labels


def test_rules_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Relabeler(
        configs({"source_labels": ["a"], "regex": "(f)(.*)", "target_label": "b", "replacement": "${2}$1"})
    )

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("regex compiled per call")

    monkeypatch.setattr(re, "compile", boom)
    monkeypatch.setattr(re2, "compile", boom)
    for _ in range(3):
        assert r({"a": "foo"}) == {"a": "foo", "b": "oof"}


def test_prometheus_benchmark_configs_parse_and_apply() -> None:
    doc = """
- source_labels: [job, __meta_dns_name]
  regex: "(.*)some-[regex]"
  target_label: job
  replacement: foo-${1}
- source_labels: [abc]
  target_label: cde
- replacement: static
  target_label: abc
- regex:
  replacement: static
  target_label: abc
- replacement: dropped
  target_label: ${0}
- replacement: ${0}
  target_label: dropped
"""
    cfgs = parse_relabel_configs(yaml.safe_load(doc), "relabel_configs")
    out = relabel({"__meta_dns_name": "example-some-x.com", "abc": "def", "job": "foo", "dropped": "x"}, cfgs)
    # job;example-some-x.com does not match (.*)some-[regex] (the class is one char), so job stays.
    assert out == {"__meta_dns_name": "example-some-x.com", "abc": "static", "cde": "def", "job": "foo"}


def test_kubernetes_benchmark_config() -> None:
    doc = r"""
- {source_labels: [__meta_kubernetes_pod_container_port_name], regex: .*-metrics, action: keep}
- {source_labels: [__meta_kubernetes_pod_label_name], action: drop, regex: ""}
- {source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], target_label: __address__,
   regex: '(.+?)(\:\d+)?;(\d+)', replacement: '$1:$3', action: replace}
- {regex: __meta_kubernetes_pod_label_(.+), action: labelmap}
- {source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_label_name], separator: /, target_label: job}
- {source_labels: [__address__], target_label: __tmp_hash, modulus: 3, action: hashmod}
- {source_labels: [__tmp_hash], regex: ^1$, action: keep}
- {regex: __tmp_hash|__meta_.*, action: labeldrop}
"""
    cfgs = parse_relabel_configs(yaml.safe_load(doc), "scrape_configs[0].relabel_configs")
    labels = {
        "__address__": "10.132.183.40:80",
        "__meta_kubernetes_namespace": "loki",
        "__meta_kubernetes_pod_container_port_name": "http-metrics",
        "__meta_kubernetes_pod_label_name": "promtail",
        "job": "kubernetes-pods",
    }
    # no port annotation: "10.132.183.40:80;" does not match ...;(\d+), address unchanged; hashmod 3 -> 1
    assert relabel(labels, cfgs) == {
        "__address__": "10.132.183.40:80",
        "job": "loki/promtail",
        "name": "promtail",
    }


# ---- regexes (RE2) ------------------------------------------------------------------------

REGEX_MATCHES = [
    ("f(.*)", "foo", True),
    ("f(.*)", "xfoo", False),
    ("", "", True),
    ("", "a", False),
    (".", "\n", True),  # Prometheus 3 anchors as ^(?s:...)$
    ("(?-s).", "\n", False),
    ("(?m)^b$", "a\nb", False),  # the outer anchors are not multiline
    ("(?m)a$\nb", "a\nb", True),
    ("a\\z", "a", True),
    (
        "foo$\n",
        "foo\n",
        False,
    ),  # Go's $ is end of text (\z); Python's bare $ would also match before a final \n
    ("(?m)foo$\n", "foo\n", True),
    ("\\Aa", "a", True),
    ("\\bfoo\\b", "foo", True),
    ("é\\b", "é", False),  # \b is ASCII-only in Go: é is not a word character
    ("\\w+", "abc_1", True),
    ("\\w", "é", False),
    ("\\s", "\v", False),  # Go \s is [\t\n\f\r ]
    ("[[:space:]]", "\v", True),
    ("[^[:^alpha:]]", "a", True),
    ("[\\D]", "a", True),
    ("[^\\d]", "5", False),
    ("\\x41\\x{42}\\103", "ABC", True),
    ("\\012", "\n", True),
    ("[]a]+", "]a", True),
    ("[a-]+", "a-", True),
    ("a{2}", "aa", True),
    ("a{2,}", "aaaa", True),
    ("a{1,2}", "aaa", False),
    ("a{01}", "a{01}", True),  # leading zero: not a repeat in Go
    ("(?i)straße", "STRAßE", True),
    ("\\p{Lu}\\p{^Lu}", "Ab", True),
    ("\\PL", "1", True),
    ("(?P<name>a)(?<other>b)", "ab", True),
    ("a*?b", "aab", True),
    ("(?:a*)*", "aaa", True),
    ("a(?i)*", "aaa", True),  # Go: the flag group is not an operand, * applies to a
    ("(?)a", "a", True),
    ("\\p{Greek}+", "αβγ", True),  # scripts: RE2 has them (the old re translation refused them)
    ("\\p{Greek}", "a", False),
    ("\\pN+", "1٣", True),
    ("\\Q(a)*\\E", "(a)*", True),
    ("\\\\C", "\\C", True),  # an escaped backslash, then C: not the \C escape
    ("(?U)(a+)", "aaa", True),
    ("(?i)k", "\u212a", True),  # Kelvin sign folds to k, as in Go
    ("a.b", "a\ud800b", True),  # a lone surrogate is U+FFFD (as in a Go string): one character
    ("[[:word:]]+", "a_1", True),
    ("x*", "x" * 10_000, True),
]


@pytest.mark.parametrize(("expr", "text", "matches"), REGEX_MATCHES)
def test_go_regex_semantics(expr: str, text: str, matches: bool) -> None:
    rx = compile_regex(expr)
    assert (rx.match(text) is not None) is matches
    assert rx.matches(text) is matches


REGEX_REJECTS = [
    "(?=a)",  # lookahead: not RE2
    "(?<=a)b",
    "(?!a)",
    "(a)\\1",  # backreference
    "a**",
    "a++",  # possessive in Python 3.11, an error in Go
    "a*??",
    "*a",
    "(|*)",
    "a{1001}",
    "a{3,2}",
    "(",
    "a)",
    "[a",
    "[z-a]",
    "[[:foo:]]",
    "\\Z",
    "\\e",
    "\\8",
    "\\",
    "\\x{110000}",
    "\\xg1",
    "(?x)a",
    "(?-)a",
    "(?i-)a",
    "(?P<a-b>x)",
    "(?P=n)",
    "(?#comment)",
    "(?>a)",
    "\\p{Foo}",
    "\\C",  # RE2's any-byte: Go refuses it (and it could split a UTF-8 sequence)
    "a[b]\\C",
    "(?P<é>x)",  # RE2 takes Unicode letters in names, Go only [A-Za-z0-9_]
    "a)|(b",  # not smuggled through as ^(?s:a)|(b)$: the source alone must be a regex
    "a\ud800",  # not UTF-8 (YAML's "\ud800" escape gives one)
    "\\pL{1000}",  # valid in Go; beyond RE2's per-regex memory budget (see test_regex_errors_are_one_line)
]


@pytest.mark.parametrize("expr", REGEX_REJECTS)
def test_go_regex_rejects(expr: str) -> None:
    with pytest.raises(ValueError):
        compile_regex(expr)


def test_group_names() -> None:
    assert compile_regex("(a)(?P<x>b)(?:c)(?<1y>d)").names == ("", "", "x", "1y")
    assert compile_regex(r"[(](?P<a>\()\Q(\E(?:(?i)(b))[[:alpha:](]()").names == ("", "a", "", "")


def test_duplicate_group_name_takes_the_first_that_matched() -> None:
    # Go's Expand: ${x} is the first group named x that took part in the match.
    rx = compile_regex("(?P<x>a)|(?P<x>b)")
    assert rx.names == ("", "x", "x")
    cfgs = configs({"source_labels": ["s"], "regex": "(?P<x>a)|(?P<x>b)", "target_label": "t", "replacement": "<${x}>"})
    assert relabel({"s": "b"}, cfgs) == {"s": "b", "t": "<b>"}
    assert relabel({"s": "a"}, cfgs) == {"s": "a", "t": "<a>"}


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("(a", "missing ): (a"),
        ("(?=x)", "invalid perl operator: (?="),
        ("a**", "bad repetition operator: **"),
        ("a{1001}", "invalid repetition size: {1001}"),
        ("\\8", "invalid escape sequence: \\8"),
        ("\\pL{1000}", "pattern too large - compile failed (RE2's memory budget is 8 MiB per regex)"),
    ],
)
def test_regex_errors_are_one_line(expr: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_relabel_configs([{"target_label": "a", "regex": expr}], "metric_relabel_configs")
    assert str(info.value) == f"metric_relabel_configs[0].regex: invalid regex {expr!r}: {problem}"


def test_pathological_regex_runs_on_re2_in_linear_time() -> None:
    # (a+)+b on a^n c backtracks 2^n ways in Python's re (~0.5 s at n=24); RE2 has no backtracking.
    value = "a" * 10_000 + "c"
    cfgs = configs(
        {"source_labels": ["v"], "regex": "(a+)+b", "action": "drop"},
        {"source_labels": ["v"], "regex": "(a+)+b", "target_label": "t", "replacement": "$1"},
        {"source_labels": ["v"], "regex": "(a+)+c", "target_label": "u", "replacement": "$1"},
    )
    for cfg in cfgs:
        assert type(cfg.regex) is Regex
        assert type(cfg.regex._capture.__self__) is re2._re2.RE2  # type: ignore[attr-defined]
        assert type(cfg.regex._filter.__self__) is re2._re2.RE2  # type: ignore[attr-defined]
        assert cfg.regex.match == cfg.regex._run_match  # no shortcut for this one: RE2 runs
    out = relabel({"v": value}, cfgs)
    assert out == {"v": value, "u": "a" * 10_000}  # (a+)+ leftmost-first: the outer group takes one run


def test_legacy_target_check_is_linear() -> None:
    # Prometheus' relabelTargetLegacy regex nests +: on Python's re this input took 11 s (n=20), ~2^n.
    long_name = "a" * 5_000 + "-"
    with pytest.raises(ConfigError, match="invalid 'replacement' for labelmap"):
        configs({"action": "labelmap", "regex": "(.*)", "replacement": long_name})
    with pytest.raises(ConfigError, match="invalid 'target_label' for replace"):
        configs({"target_label": "$1" + long_name})
    assert configs({"action": "labelmap", "regex": "(.*)", "replacement": "a" * 5_000 + "${1}"})


@pytest.mark.parametrize("source", ["(.*)", ".*", "", "up", "etcd_server_has_leader", "a:b_1"])
def test_shortcuts_answer_as_re2_does(source: str) -> None:
    rx = compile_regex(source)
    assert rx.match != rx._run_match  # a shortcut is in use
    for text in ["", "up", "etcd_server_has_leader", "a:b_1", "a\nb", "UP", "up\n", "é", "a\ud800"]:
        fast, slow = rx.match(text), rx._run_match(text)
        assert (fast is None) == (slow is None), text
        assert rx.matches(text) == rx._run_matches(text) == (slow is not None), text
        if fast is not None and slow is not None:
            assert [fast.group(g) for g in range(rx.groups + 1)] == [slow.group(g) for g in range(rx.groups + 1)]


def test_label_name_memo_stays_right_past_its_bound() -> None:
    # labelmap / labeldrop remember their answer per label name, and forget all past 4096 names.
    drop = Relabeler(configs({"regex": "tmp_.*", "action": "labeldrop"}))
    lmap = Relabeler(configs({"regex": "m_(.*)", "action": "labelmap", "replacement": "${1}_x"}))
    for i in range(5_000):
        assert drop({f"tmp_{i}": "v", f"keep_{i}": "w"}) == {f"keep_{i}": "w"}
        assert lmap({f"m_{i}": "v"}) == {f"m_{i}": "v", f"{i}_x": "v"}
    assert drop({"tmp_1": "v", "keep_1": "w"}) == {"keep_1": "w"}


def test_regex_equality_follows_source() -> None:
    assert compile_regex("a+") == Regex("a+")
    assert hash(compile_regex("a+")) == hash(Regex("a+"))
    assert Regex("a+") != Regex("a*")
    assert configs({"target_label": "a", "regex": "x"}) == configs({"target_label": "a", "regex": "x"})
    (cfg,) = configs({"source_labels": ["a"], "regex": "(x+)", "target_label": "b"})
    copied = pickle.loads(pickle.dumps(cfg))
    assert copied == cfg
    assert relabel({"a": "xx"}, (copied,)) == {"a": "xx", "b": "xx"}


_ATOMS = st.sampled_from(["a", "b", ".", "[ab]", "[^a]", "\\d", "a*", "b+?", "(a|b)", "(a*)", "(?:ab)?", "x?"])


@given(
    st.lists(st.lists(_ATOMS, min_size=1, max_size=4), min_size=1, max_size=3),
    st.lists(st.text(alphabet="ab1x\n", max_size=8), min_size=1, max_size=5),
)
@settings(max_examples=200, deadline=None)
def test_re2_agrees_with_python_re_on_a_common_subset(alternatives: list[list[str]], texts: list[str]) -> None:
    # Both are leftmost-first (Perl) engines: on syntax they share, whole match and groups agree.
    source = "|".join("".join(atoms) for atoms in alternatives)
    rx = compile_regex(source)
    py = re.compile(rf"\A(?s:{source})\Z", re.ASCII)
    for text in texts:
        m, p = rx.match(text), py.match(text)
        assert (m is None) == (p is None), (source, text)
        assert rx.matches(text) == (p is not None)
        if m is not None and p is not None:
            assert [m.group(g) for g in range(rx.groups + 1)] == [p.group(g) for g in range(py.groups + 1)]


# ---- configuration errors ---------------------------------------------------------------------

CONFIG_ERRORS = [
    ({"target_label": "a", "foo": 1}, "[0].foo", "unknown key"),
    ({"target_label": "a", "regex": "(a"}, "[0].regex", "invalid regex '(a'"),
    ({"target_label": "a", "regex": "(?=x)"}, "[0].regex", "invalid regex"),
    ({"target_label": "a", "regex": ["x"]}, "[0].regex", "must be a string"),
    ({"target_label": "a", "action": "explode"}, "[0].action", "unknown relabel action"),
    ({"target_label": "a", "action": None}, "[0].action", "cannot be empty"),
    ({"action": "replace"}, "[0].target_label", "requires 'target_label'"),
    ({"target_label": "1abc"}, "[0].target_label", "invalid 'target_label' for replace"),
    ({"target_label": "-${3}"}, "[0].target_label", "invalid 'target_label' for replace"),
    ({"target_label": "0${3}"}, "[0].target_label", "invalid 'target_label'"),
    ({"target_label": "foo${"}, "[0].target_label", "invalid 'target_label'"),
    ({"target_label": "a.b"}, "[0].target_label", "invalid 'target_label'"),
    ({"action": "hashmod", "target_label": "h"}, "[0].modulus", "non-zero modulus"),
    ({"action": "hashmod", "modulus": 3}, "[0].target_label", "requires 'target_label'"),
    (
        {"action": "hashmod", "modulus": 3, "target_label": "h${1}"},
        "[0].target_label",
        "invalid 'target_label' for hashmod",
    ),
    ({"action": "hashmod", "modulus": -1, "target_label": "h"}, "[0].modulus", "between 0 and 2^64-1"),
    ({"action": "hashmod", "modulus": "3", "target_label": "h"}, "[0].modulus", "non-negative integer"),
    ({"action": "lowercase"}, "[0].target_label", "requires 'target_label'"),
    (
        {"action": "uppercase", "target_label": "${3}"},
        "[0].target_label",
        "invalid 'target_label' for uppercase",
    ),
    (
        {"action": "lowercase", "target_label": "t", "replacement": "x"},
        "[0].replacement",
        "can not be set for lowercase",
    ),
    (
        {"action": "keepequal", "target_label": "t", "regex": "(.*)"},
        "[0].regex",
        "requires only 'source_labels' and 'target_label'",
    ),
    ({"action": "dropequal", "target_label": "t", "separator": ","}, "[0].separator", "requires only"),
    ({"action": "dropequal", "target_label": "t", "modulus": 2}, "[0].modulus", "requires only"),
    (
        {"action": "keepequal", "target_label": "t", "replacement": "x"},
        "[0].replacement",
        "can not be set for keepequal",
    ),
    ({"action": "keepequal"}, "[0].target_label", "requires 'target_label'"),
    (
        {"action": "labeldrop", "regex": "a", "source_labels": []},
        "[0].source_labels",
        "requires only 'regex'",
    ),
    ({"action": "labelkeep", "regex": "a", "target_label": "b"}, "[0].target_label", "requires only 'regex'"),
    ({"action": "labeldrop", "regex": "a", "replacement": "b"}, "[0].replacement", "requires only 'regex'"),
    (
        {"action": "labelmap", "regex": "(.*)", "replacement": "-$1"},
        "[0].replacement",
        "invalid 'replacement' for labelmap",
    ),
    ({"source_labels": "a", "target_label": "b"}, "[0].source_labels", "must be a list"),
    ({"source_labels": ["a-b"], "target_label": "b"}, "[0].source_labels[0]", "not a valid label name"),
    ({"source_labels": [1], "target_label": "b"}, "[0].source_labels[0]", "must be a string"),
]


@pytest.mark.parametrize(("raw", "where", "problem"), CONFIG_ERRORS)
def test_config_errors(raw: Raw, where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_relabel_configs([raw], "metric_relabel_configs")
    err = info.value
    assert err.where == "metric_relabel_configs" + where
    assert problem in err.problem
    assert "\n" not in str(err)


def test_config_errors_shape() -> None:
    with pytest.raises(ConfigError, match=r"^relabel_configs: must be a list"):
        parse_relabel_configs({"action": "drop"}, "relabel_configs")
    with pytest.raises(ConfigError, match=r"^relabel_configs\[1\]: must be a mapping"):
        parse_relabel_configs([{"target_label": "a"}, "drop"], "relabel_configs")
    assert parse_relabel_configs(None, "relabel_configs") == ()


def test_config_errors_follow_prometheus_validation() -> None:
    # Accepted by Prometheus' Validate (TestRelabelValidate and friends).
    configs(
        {
            "source_labels": ["a"],
            "regex": "some-([^-]+)-([^,]+)",
            "replacement": "${1}",
            "target_label": "${3}",
        }
    )
    configs(
        {"regex": "__meta_kubernetes_pod_label_(strimzi_io_.+)", "action": "labelmap", "replacement": "$1"}
    )
    configs({"regex": "__meta_(.+)", "action": "labelmap", "replacement": "${1}"})
    configs(
        {
            "action": "keepequal",
            "source_labels": ["a"],
            "target_label": "b",
            "separator": ";",
            "replacement": "$1",
        }
    )
    configs({"action": "uppercase", "target_label": "${3}"}, scheme="utf8")


@pytest.mark.parametrize(
    ("target", "valid"),
    [
        ("-label", False),
        ("label", True),
        ("label${1}", True),
        ("${1}label", True),
        ("${1}", True),
        ("${", False),
        ("$", False),
        ("${}", False),
        ("foo${", False),
        ("$1", True),
        ("asd$2asd", True),
        ("-foo${1}bar-", False),
        ("bar.foo${1}bar", False),
        ("_${1}_", True),
        ("foo${bar}foo", True),
    ],
)
def test_target_label_legacy_validity(target: str, valid: bool) -> None:
    """Prometheus' TestTargetLabelLegacyValidity."""
    if valid:
        configs({"target_label": target})
    else:
        with pytest.raises(ConfigError):
            configs({"target_label": target})


def test_defaults() -> None:
    (cfg,) = configs({"target_label": "t"})
    assert (cfg.source_labels, cfg.separator, cfg.regex_source, cfg.replacement, cfg.action, cfg.modulus) == (
        (),
        ";",
        "(.*)",
        "$1",
        "replace",
        0,
    )
    assert cfg.regex.match("anything\nat all")


@given(
    st.lists(st.dictionaries(st.sampled_from(["__name__", "a", "b", "c"]), st.sampled_from(["", "x", "y", "xy"]),
                             max_size=4), min_size=1, max_size=8),
    st.lists(st.tuples(st.sampled_from(["keep", "drop", "keepequal", "dropequal"]),
                       st.lists(st.sampled_from(["__name__", "a", "b", "c"]), min_size=1, max_size=2),
                       st.sampled_from(["x", "x.*", ".*y", "x;y", ""]), st.sampled_from(["a", "b", "c"])),
             min_size=1, max_size=3),
)
@settings(max_examples=200, deadline=None)
def test_filter_only_rules_decide_from_their_sources(
    label_sets: list[dict[str, str]], rules: list[tuple[str, list[str], str, str]]
) -> None:
    """A keep/drop-only rule list: keeps(values of filter_sources) is exactly whether relabeling
    keeps the series, and a kept series is unchanged (empty values aside)."""
    raw = []
    for action, sources, regex, target in rules:
        rule: dict[str, Any] = {"action": action, "source_labels": sources}
        if action in ("keepequal", "dropequal"):
            rule["target_label"] = target
        else:
            rule["regex"] = regex
        raw.append(rule)
    relabeler = Relabeler(parse_relabel_configs(raw, "metric_relabel_configs"))
    assert relabeler.filter_sources is not None
    for labels in label_sets:
        out = relabeler(labels)
        key = tuple(labels.get(k, "") for k in relabeler.filter_sources)
        assert relabeler.keeps(key) == (out is not None)
        assert relabeler.keeps(key) == (out is not None)  # remembered: the same answer
        if out is not None:
            assert out == {k: v for k, v in labels.items() if v}


def test_rules_that_change_labels_are_not_filters() -> None:
    for action in ("replace", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase"):
        rule: dict[str, Any] = {"action": action, "source_labels": ["a"], "target_label": "b", "modulus": 2}
        if action in ("labelmap", "labeldrop", "labelkeep"):
            rule = {"action": action, "regex": "a"}
        if action == "hashmod":
            rule = {"action": action, "source_labels": ["a"], "target_label": "b", "modulus": 2}
        if action in ("lowercase", "uppercase"):
            rule = {"action": action, "source_labels": ["a"], "target_label": "b"}
        if action == "replace":
            rule = {"action": action, "source_labels": ["a"], "target_label": "b"}
        keep = {"action": "keep", "source_labels": ["a"], "regex": "x"}
        assert Relabeler(parse_relabel_configs([keep, rule], "m")).filter_sources is None, action
