"""What tierstream keeps in Redis, one module per kind: segment membership
(store.membership), the operator metrics' cells (store.metrics_store) and
the dashboard's live feed (store.live_feed). Written by the worker, read by
the API; a cache of the topics, rebuilt from them when lost."""
