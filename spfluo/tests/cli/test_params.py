"""``key=value`` command-line parameters (spfluo.params)."""

import pytest

from spfluo.params import parse_key_values


def test_pairs_become_a_dict_of_strings():
    assert parse_key_values(["a=1", " b =x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    assert parse_key_values([]) == {}


@pytest.mark.parametrize("bad", ["novalue", "=1"])
def test_a_pair_without_key_or_equals_sign_ends_the_command(bad):
    with pytest.raises(SystemExit, match="expected key=value"):
        parse_key_values([bad])
