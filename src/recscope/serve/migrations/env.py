"""Alembic environment: migrations run on the connection ``Store.open`` hands over.

``recscope.serve.store.migrate`` passes ``config.attributes["connection"]`` inside its own
transaction (so two processes opening a fresh database do not both create it). Run from
the command line (``alembic -x url=...``) a connection is made from that URL instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from recscope.serve.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
