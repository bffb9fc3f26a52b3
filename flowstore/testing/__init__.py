"""flowstore's test kit: a pytest plugin (fixtures ``flowstore_store`` and ``uow``) and
factory-boy factories (``flowstore.testing.factories``, needs the ``test`` extra).

Outside pytest, ``migrated_store()`` and ``isolated_unit_of_work(store)`` give the same
isolation the fixtures give (for unittest, scripts, or other test runners).
"""

from flowstore.testing.isolation import isolated_unit_of_work, migrated_store

__all__ = ["isolated_unit_of_work", "migrated_store"]
