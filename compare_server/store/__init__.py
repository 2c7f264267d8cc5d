"""The store: the only package that touches SQLAlchemy. Use compare_server.store.store.Store."""
