"""The package's public names: ``__all__`` lists exactly the lazily imported API, and each name resolves."""

import igkd


def test_all_lists_the_version_and_every_lazy_api_name_once():
    assert igkd.__all__ == ["__version__", *igkd._API]
    assert all(isinstance(name, str) for name in igkd.__all__)


def test_every_public_name_resolves():
    for name in igkd.__all__:
        assert getattr(igkd, name) is not None
    assert sorted(dir(igkd)) == sorted(igkd.__all__)
