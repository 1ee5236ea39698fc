"""Views: rows kept from entity state, events and topics, queried with the protocol's SQL
subset. Built so far: the query language (`larder_sidecar.views.query`); storage,
delivery, discovery and the query path are not yet (docs/views.md)."""
