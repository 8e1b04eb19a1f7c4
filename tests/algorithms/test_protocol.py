"""Named protocols: "official" is the defaults, "paper" sets its values, conflicts are named."""

from __future__ import annotations

import pytest

from mucode_jax.algorithms import protocol
from mucode_jax.algorithms.config import check_config, mucode_defaults


def _config(**kw):
    c = mucode_defaults()
    c.base = "/ckpt/base"
    for k, v in kw.items():
        node, leaf = protocol._node(c, k)
        node[leaf] = v
    return c


def test_official_is_the_defaults():
    c = _config()
    before = c.to_json()
    check_config(c)
    assert c.to_json() == before  # applying the default protocol changes nothing
    for key, value in protocol.PROTOCOLS["official"].items():
        assert protocol.get_key(c, key) == value, key


def test_paper_protocol_sets_every_switch():
    c = _config(protocol="paper")
    check_config(c)
    for key, value in protocol.PROTOCOLS["paper"].items():
        assert protocol.get_key(c, key) == value, key
    assert c.relabel.oracle_assisted is False and c.sft.data.batch_unit == "rows"
    assert c.eval.verifier == "previous" and c.verifier.data.eval_fraction == 0.1
    # Every protocol names the same switches (plus layout-only keys), so each is documented.
    official, paper = protocol.PROTOCOLS["official"], protocol.PROTOCOLS["paper"]
    assert set(official) <= set(paper) and set(paper) - set(official) == {"sft.data.pack"}


def test_a_setting_against_the_protocol_is_one_sentence():
    c = _config(**{"relabel.oracle_assisted": False})
    with pytest.raises(ValueError, match="relabel.oracle_assisted=False contradicts") as e:
        check_config(c)
    assert "protocol='custom'" in str(e.value) and "\n" not in str(e.value)
    c = _config(protocol="custom", **{"relabel.oracle_assisted": False})
    check_config(c)  # custom constrains nothing
    assert c.relabel.oracle_assisted is False
    c = _config(protocol="custom", **{"eval.verifier": "next"})
    with pytest.raises(ValueError, match="config.eval.verifier must be one of"):
        check_config(c)
