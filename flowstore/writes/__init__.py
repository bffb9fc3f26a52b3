"""The fast write path of new rows, one concern a module, each importing only those above it
in this list:

* :mod:`~flowstore.writes.plan`: which columns a model's new rows fill and how (defaults,
  copies, checks, the version counter), from the public mapping;
* :mod:`~flowstore.writes.rows`: filling and checking the rows' values, for ``add_many`` and
  the ``AuditWriter`` alike;
* :mod:`~flowstore.writes.send`: sending the rows per dialect through the driver (``COPY`` on
  PostgreSQL with psycopg, a positional executemany elsewhere, Core's ``insert()`` otherwise);
* :mod:`~flowstore.writes.attach`: making the objects persistent in their session as a flush
  does; the only module that sets ORM internals, probed on first use, with the ordinary flush
  as the public fallback.

``flowstore.repositories.bulk`` runs them for ``Repository.add_many``.
"""
