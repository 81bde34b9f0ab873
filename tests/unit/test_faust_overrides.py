"""The private parts of Faust that stream/batching.py and stream/recovery.py
override or call, checked against the installed Faust: a Faust upgrade
that renames or reshapes one of them fails here, not in production."""

import inspect

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.batching import BatchingConsumer
from stream.recovery import TierstreamTableManager, TrueEndRecovery


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_methods_we_override_have_the_signatures_we_override():
    base = faust_aiokafka.Consumer
    for name in ("_drain_messages", "_filter_tps_with_pending_acks", "_new_offset", "on_partitions_revoked",
                 "wait_empty"):
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
