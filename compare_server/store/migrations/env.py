"""Alembic environment: cmp always runs migrations on a connection it hands over (see store/schema.py)."""

from alembic import context

from compare_server.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
