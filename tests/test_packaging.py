"""The installed import names are generic words: each must come from this distribution and no other."""

from __future__ import annotations

import importlib.metadata

import pytest

TOP_LEVEL = ("api", "core", "workflows", "activities", "worker", "cli")


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_import_name_belongs_to_chronos_alone(name: str) -> None:
    owners = importlib.metadata.packages_distributions().get(name)
    assert owners is not None, f"{name} is not installed by any distribution"
    assert set(owners) == {"chronos"}


def test_distribution_is_marked_private() -> None:
    classifiers = importlib.metadata.metadata("chronos").get_all("Classifier") or []
    assert "Private :: Do Not Upload" in classifiers
