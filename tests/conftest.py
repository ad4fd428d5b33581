"""Test-session hooks shared by every package.

``pytest.mark.xdist_group`` keeps a module's tests on one xdist worker under
``--dist loadgroup`` (``make test``), so a module-scoped node or devnet starts once
and ordered steps stay in order. pytest-xdist 3.8 marks the group by appending
``@group`` to ``item._nodeid``, which pytest 9 no longer reads (node ids live in
``item._id``), so every group was silently spread over all workers. This hook
re-applies the suffix where xdist's did not take; it does nothing when xdist's works.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not getattr(config.option, "loadgroup", False):  # no xdist, or not --dist loadgroup
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9: xdist's own suffix works
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
