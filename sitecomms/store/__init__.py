"""Storage: the schema, its migrations, named transactions and plain query functions.

Query functions are synchronous and take a connection already inside a transaction
(`database.Connection`); `Database.read`/`Database.write` run them by name on the right engine, and
`blocking.run` runs one outside an event loop (CLI, start-up). The store's failures are its
own (`errors.Unavailable`, `errors.Duplicate`): nothing above the store names SQLAlchemy.
"""
