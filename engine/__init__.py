"""One partition of users, as a pure object: events, wall-clock ticks and
population reports in; effects out (states to write, decisions to publish,
population reports, metric facts). No Kafka, Redis or Prometheus here: the
adapters in agents/ move the bytes.

- engine.clock: live or replay event time, as an object.
- engine.effects: what a step asks the adapters to do.
- engine.partition: PartitionEngine, one partition's watermark, held
  events, sweeps and quantile periods.
- engine.coordinator: Coordinator, what crosses partitions in one process
  (the threshold book, which partitions may go on), and the engines it owns.

One user's step (an event applied, time advanced) is state.steps; this
package decides when each step happens.
"""
