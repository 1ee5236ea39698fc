"""Views: rows kept from entity state and events, queried with the protocol's SQL subset
(docs/views.md).

- `query/`: the query language (parser, validator, evaluator);
- `spec.py`: what a view component declares, read and checked at discovery;
- `store.py`, `sqlite_store.py`, `sql.py`, `columns.py`: where rows are kept (memory,
  SQLite) with the columns queries filter on;
- `feed.py`, `delivery.py`, `handle.py`, `catchup.py`: committed journal writes become
  rows, at least once, in order per entity;
- `queries.py`: the query methods answered from the store;
- `runtime.py`: all of it in a running sidecar.

Layering: views depend on the journal and the model; the dispatcher calls `queries.py`.
Nothing here imports the dispatcher, the fronts or the entities.
"""
