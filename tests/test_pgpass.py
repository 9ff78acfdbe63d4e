"""roles/barman writes Barman's ~/.pgpass with pgpass_escape (filter_plugins/pgpass.py): a password with a
colon or a backslash must come out of libpq's reading of the line as it went in (libpq's rule, as its
passwordFromFile applies it). The cluster scenario logs Barman in with such a password for real."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "pgpass", Path(__file__).resolve().parents[1] / "roles/barman/filter_plugins/pgpass.py")
pgpass = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pgpass)


def read_fields(line: str) -> list[str]:
    """The fields of a .pgpass line the way libpq's passwordFromFile splits them: a backslash takes the next
    character as it is, an unescaped colon ends a field."""
    fields, current, escaped = [], "", False
    for char in line:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields, current = fields + [current], ""
        else:
            current += char
    return fields + [current]


@pytest.mark.parametrize("password", ["plain", "pa:ss", "back\\slash", "test-Barman-pa:ss\\w0rd/+=@#?%", "::\\\\:"])
def test_a_password_survives_the_pgpass_line(password):
    line = f"10.0.0.13:5432:*:barman:{pgpass.pgpass_escape(password)}"
    assert read_fields(line) == ["10.0.0.13", "5432", "*", "barman", password]
