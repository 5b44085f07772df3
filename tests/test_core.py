"Settings and artifact helpers, exercised from outside the notebooks."
import pytest
from posterlens.core import load_settings, list_variants, PosterlensError, run_dir


def test_every_declared_variant_loads():
    names = list_variants()
    assert {"smoke", "default"} <= set(names)
    for v in names:
        cfg = load_settings(v)
        assert cfg.variant == v and cfg.target_col


def test_override_types_and_unknown_keys():
    assert load_settings("smoke", ["lr=1e-4"]).lr == pytest.approx(1e-4)
    with pytest.raises(PosterlensError):
        load_settings("smoke", ["no_such_key=1"])
