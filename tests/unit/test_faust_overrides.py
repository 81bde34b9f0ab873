"""The private parts of Faust and aiokafka that stream/faust_ext/ overrides,
calls or reads (its __init__ lists them), checked against the installed
versions: an upgrade that renames or reshapes one of them fails here, not
in production."""

import inspect

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.faust_ext.batching import BatchingConsumer, batching_consumer_class
from stream.faust_ext.recovery import TierstreamTableManager, TrueEndRecovery
from stream.faust_ext.table import UsersTable
from stream.faust_ext.tuning import TunedConsumerThread


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_methods_we_override_have_the_signatures_we_override():
    base = faust_aiokafka.Consumer
    for name in ("_drain_messages", "_filter_tps_with_pending_acks", "_new_offset", "on_partitions_revoked",
                 "wait_empty", "_new_consumer_thread"):
        assert params(getattr(base, name)) == params(getattr(BatchingConsumer, name)), name
    for name in ("_build_highwaters", "_build_offsets"):
        assert params(getattr(Recovery, name)) == params(getattr(TrueEndRecovery, name)), name
    assert isinstance(inspect.getattr_static(TableManager, "recovery"), property)
    assert isinstance(inspect.getattr_static(TierstreamTableManager, "recovery"), property)


def test_the_private_methods_we_call_exist_with_the_arguments_we_pass():
    base = faust_aiokafka.Consumer
    assert params(base._wait_next_records) == ["self", "timeout"]
    assert params(base._to_message) == ["self", "tp", "record"]
    assert params(base._commit_offsets) == ["self", "offsets", "start_new_transaction"]
    assert "transactional_id" in params(faust_aiokafka.Producer.send)
    assert params(faust_aiokafka.Producer._ensure_producer) == ["self"]


def test_the_private_state_we_read_is_set_where_we_expect_it():
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    for attribute in ("_read_offset", "_committed_offset", "_buffered_partitions"):
        assert f"self.{attribute}" in init, attribute
    # Faust's commit path records what it committed, and honours a None
    # "new offset" by committing nothing for that partition.
    commit = inspect.getsource(faust_consumer.Consumer._commit_offsets)
    assert "self._committed_offset.update(" in commit
    assert "offset is not None" in inspect.getsource(faust_consumer.Consumer._filter_committable_offsets)
    recovery = inspect.getsource(Recovery)
    assert "self.tp_to_table" in recovery and "self.active_highwaters" in recovery


def test_the_consumer_thread_override_and_what_it_sets():
    base = faust_aiokafka.AIOKafkaConsumerThread
    assert params(base._create_worker_consumer) == params(TunedConsumerThread._create_worker_consumer)
    # Faust's own builds its thread this way; ours builds the tuned one the same way.
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in inspect.getsource(
        faust_aiokafka.Consumer._new_consumer_thread)
    # aiokafka reads the fetch wait from this attribute when its fetcher starts.
    import aiokafka

    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)


def test_building_the_app_patches_nothing_process_wide():
    """The fetch wait used to be set by replacing a method on Faust's class
    for every app in the process; now each app's consumer builds its own thread."""
    from stream.app import build_app
    from stream.settings import Settings

    original = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    streams = build_app(Settings(fetch_max_wait_ms=7))
    assert faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer is original
    consumer_class = streams.app.transport.Consumer
    assert issubclass(consumer_class, BatchingConsumer)
    assert consumer_class.consumer_thread_class.fetch_max_wait_ms == 7
    assert batching_consumer_class({}, None, None).consumer_thread_class.fetch_max_wait_ms is None


def test_the_table_hooks_and_producer_internals_we_use():
    import faust

    assert params(faust.Table.on_recovery_completed) == params(UsersTable.on_recovery_completed)
    from faust.assignor import PartitionAssignor

    assert params(PartitionAssignor.group_for_topic) == ["self", "topic"]
    from faust.transport.consumer import TransactionManager

    # stream.faust_ext.producer.transactional_id spells Faust's format out.
    assert TransactionManager.transactional_id_format == "{group_id}-{tpg.group}-{tpg.partition}"


def test_commits_of_a_batch_handled_topic_stop_at_its_commit_limit():
    """The handler took records it has not applied (deferred events): the
    offset committed, and the commit point, stop before the first of them."""
    from types import SimpleNamespace

    from faust.types import TP

    limits = {"events": lambda p: {0: 12}.get(p)}
    consumer = SimpleNamespace(commit_limits=limits, _batch_done={TP("events", 0): 20, TP("events", 1): 20},
                               _committed_offset={}, batch_handlers={"events": None}, in_transaction=False)
    consumer._limited = lambda tp, offset: BatchingConsumer._limited(consumer, tp, offset)
    assert BatchingConsumer.commit_point(consumer, TP("events", 0)) == 12
    assert BatchingConsumer.commit_point(consumer, TP("events", 1)) == 20
    assert BatchingConsumer._new_offset(consumer, TP("events", 0)) == 12
    assert BatchingConsumer._limited(consumer, TP("other", 0), 20) == 20
