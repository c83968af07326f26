"""Storage: the schema, its migrations, named transactions and plain query functions.

Query functions are synchronous and take a SQLAlchemy `Connection` already inside a
transaction; `Database.read`/`Database.write` run them by name on the right engine.
"""
