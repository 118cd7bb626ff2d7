"""skiff.fastjson: the same results as json, and ValueError (not SystemError) for bad input."""

from __future__ import annotations

import json

import pytest

from skiff import fastjson


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x", null, true, false]}', ' [] ', '"\\u00e9"',
                                  '{"nested": {"k": {}}}', "-0.5e3"])
def test_loads_agrees_with_json(text: str) -> None:
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["{not json", "[1,", '{"a": tru}', '"abc', "", "   ", "[1] 2", "{"])
def test_bad_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_dumps_agrees_with_json() -> None:
    doc = {"a": [1, 2.5, "é", None, True], "b": {"c": {}}}
    assert fastjson.dumps(doc) == json.dumps(doc)
    assert json.loads(fastjson.dumps(doc, indent=2)) == doc


def test_bad_json_in_a_fresh_interpreter_without_json_imported() -> None:
    # the runtime never imports json; Python 3.11's C scanner then fails with SystemError unless
    # fastjson imports json.decoder itself on the error path
    import subprocess
    import sys

    code = ("import sys\nfrom skiff import fastjson\nassert 'json.decoder' not in sys.modules\n"
            "try:\n    fastjson.loads('{not json')\nexcept ValueError as e:\n    print('ValueError', e)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ValueError Expecting property name")
