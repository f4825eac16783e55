"""`thingledger contract` JSON arguments: "0x.." strings become byte strings,
floats are refused (they cannot cross the contract boundary)."""

import pytest

from tools.cli import UsageError
from tools.cli import contract as cli_market


def test_json_hex_strings_become_bytes():
    v = cli_market._json('["0x00ff", {"k": ["0xab", 3, "text"]}, null]', "--args")
    assert v == [b"\x00\xff", {"k": [b"\xab", 3, "text"]}, None]


@pytest.mark.parametrize("text", ['[1.5]', '["0xzz"]', '[1,'])
def test_bad_json_arguments_are_usage_errors(text):
    with pytest.raises(UsageError) as e:
        cli_market._json(text, "--args")
    assert "--args" in str(e.value)
