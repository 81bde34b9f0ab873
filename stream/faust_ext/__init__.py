"""Every place tierstream reaches into Faust's or aiokafka's internals, and
nowhere else. Each override says why and what it replaces;
tests/unit/test_faust_overrides.py checks every one against the installed
versions, so an upgrade that renames or reshapes one fails there, not in
production. Nothing here patches a class process-wide: each override is a
subclass the app is built with (stream.app.build_app).

- batching.BatchingConsumer (subclasses faust's aiokafka Consumer):
  whole fetched batches to a handler instead of Faust's per-record path;
  offsets committed after a handled batch; revoke hooks; transactions
  committed under the worker's own lock. Overrides `_drain_messages`,
  `_filter_tps_with_pending_acks`, `_new_offset`, `on_partitions_revoked`,
  `wait_empty`, `_new_consumer_thread`; calls `_wait_next_records`,
  `_to_message`, `_commit_offsets`; reads `_read_offset`,
  `_committed_offset`, `_buffered_partitions`.
- tuning.TunedConsumerThread (subclasses AIOKafkaConsumerThread): the
  consumer's fetch wait, which Faust hard-codes to 1.5 s. Overrides
  `_create_worker_consumer`; sets aiokafka's `_fetch_max_wait_ms`.
- recovery.TrueEndRecovery / TierstreamTableManager: changelog recovery to
  the true end of each partition (Tansu under-reports it), read in bulk.
  Overrides Recovery `_build_highwaters`, `_build_offsets`, the
  TableManager's `recovery` property; reads `tp_to_table`, `active_highwaters`.
- table.UsersTable (subclasses faust.Table): the compact state codec, bulk
  restore, and the worker told which partitions it owns once recovered
  (`on_recovery_completed`).
- codecs: the 'tierstate' and 'utf8' Faust codecs (registered by
  `register`, called when the app is built).
- producer: the aiokafka producer under Faust's (`_ensure_producer`), and
  Faust's transactional id naming.
"""
