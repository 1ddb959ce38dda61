"""Prometheus metrics: the daemon owns one registry and passes it down (no global registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class DaemonMetrics:
    """Every metric eddy exports, labelled by pipeline (and bounded labels only)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        P = ["pipeline"]
        self.build = Info("eddy_build", "eddy version", registry=r)
        self.events = Counter("eddy_events_total", "Input records consumed, by kind", P + ["kind"], registry=r)
        self.decisions = Counter("eddy_decisions_total", "Decisions published", P + ["source"], registry=r)
        self.defaults = Counter("eddy_default_decisions_total",
                                "Decisions that fell back to the default action, by reason", P + ["reason"], registry=r)
        self.explored = Counter("eddy_explored_decisions_total",
                                "Decisions that did not pick the greedy action", P, registry=r)
        self.errors = Counter("eddy_errors_total", "Rejected records and requests, by reason", P + ["reason"], registry=r)
        self.dead_letters = Counter("eddy_dead_letter_messages_total", "Records published to the dead-letter topic",
                                    P + ["reason"], registry=r)
        self.replays = Counter("eddy_replayed_decisions_total",
                               "Decisions published again after a restart (marked replay)", P, registry=r)
        self.rewards = Counter("eddy_rewards_total", "Rewards learned, by outcome (joined, defaulted, evicted)",
                               P + ["outcome"], registry=r)
        self.reward_sum = Counter("eddy_reward_sum_total", "Sum of joined rewards", P, registry=r)
        self.batch_latency = Histogram("eddy_batch_duration_seconds",
                                       "Wall time to process one micro-batch (decode, decide, learn)",
                                       P, buckets=BATCH_BUCKETS, registry=r)
        self.decision_latency = Histogram("eddy_decision_latency_seconds",
                                          "Sidecar /decide handling time", P, buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Counter("eddy_stage_seconds_total",
                                     "Wall time of the pipeline loop by stage (poll, process, publish, checkpoint; "
                                     "flush: the part of publish spent waiting for the broker's acknowledgements)",
                                     P + ["stage"], registry=r)
        self.lag = Gauge("eddy_consumer_lag_messages", "Consumer lag per partition", P + ["topic", "partition"],
                         registry=r)
        self.checkpoint_age = Gauge("eddy_checkpoint_age_seconds", "Seconds since the last checkpoint", P, registry=r)
        self.checkpoints = Counter("eddy_checkpoints_total", "Checkpoints written", P, registry=r)
        self.offset_resets = Counter("eddy_offset_resets_total", "Partitions whose resume position lay beyond "
                                     "the log's end (log lost or topic recreated), moved by the reset policy",
                                     P + ["topic", "partition"], registry=r)
        self.join_size = Gauge("eddy_join_buffer_entries", "Decisions waiting for a reward", P, registry=r)
        self.join_cap = Gauge("eddy_join_buffer_capacity_entries", "Cap of the join buffer", P, registry=r)
        self.dedup_size = Gauge("eddy_dedup_entries", "Remembered event ids", P, registry=r)
        self.cap_evictions = Counter("eddy_cap_evictions_total", "Entries pushed out by a configured cap",
                                     P + ["cap"], registry=r)
        self.vocab_size = Gauge("eddy_feature_cache_entries", "Cached feature-name hashes", P, registry=r)
        self.learner = Gauge("eddy_learner_value", "Learner gauges (learned events, actions, gamma...)",
                             P + ["name"], registry=r)
        self.ope = Gauge("eddy_ope_value", "Off-policy estimate of a policy's average reward",
                         P + ["policy", "estimator"], registry=r)
        self.version_reward = Gauge("eddy_model_version_reward_mean",
                                    "Average joined reward of the decisions made by each recent model version",
                                    P + ["version"], registry=r)
        self.action_decisions = Counter("eddy_action_decisions_total", "Decisions per action", P + ["action"],
                                        registry=r)
        self.action_rewards = Counter("eddy_action_reward_sum_total", "Joined reward per action", P + ["action"],
                                      registry=r)
        self.action_feedback = Counter("eddy_action_feedback_total", "Joined rewards per action", P + ["action"],
                                       registry=r)
        self.force_default = Gauge("eddy_force_default", "1 while the default policy is forced", P, registry=r)
        self.ready = Gauge("eddy_ready", "1 once kernels are compiled, state restored, the consumer group joined "
                           "and every assigned partition restored", P, registry=r)
        self.assigned_partitions = Gauge("eddy_assigned_partitions", "Input partitions this daemon's pipeline "
                                         "owns in its consumer group", P + ["topic"], registry=r)
        self.topic_lag = Gauge("eddy_topic_lag_messages", "Records of the input topic (every partition, owned or "
                               "not) past the group's committed offsets", P + ["topic"], registry=r)
        self.checkpoint_damaged = Counter("eddy_checkpoint_damaged_total", "Checkpoints found damaged at start-up "
                                          "(skipped for an older intact one)", P, registry=r)
        # Paging pipelines (cache shadows).
        self.cache_requests = Counter("eddy_cache_requests_total", "Cache accesses replayed, by result (hit, miss)",
                                      P + ["result"], registry=r)
        self.cache_evictions = Counter("eddy_cache_evictions_total", "Pages the cache was told to evict", P,
                                       registry=r)
        self.cache_deletes = Counter("eddy_cache_deletes_total", "Delete/invalidate events applied", P, registry=r)
        self.cache_resizes = Counter("eddy_cache_resizes_total", "Resize events applied", P, registry=r)
        self.cache_hit_ratio = Gauge("eddy_cache_hit_ratio",
                                     "Hit ratio of the cache: over all accesses, and over the recent window",
                                     P + ["window"], registry=r)
        self.cache_shadow_hit_ratio = Gauge("eddy_cache_shadow_hit_ratio",
                                            "Hit ratio of a baseline policy replayed on the same stream",
                                            P + ["policy"], registry=r)
        # Groupwise pipelines.
        self.labels = Counter("eddy_labels_total", "Labels of groupwise events, by outcome (joined, expired "
                              "unlearned, evicted by the buffer cap)", P + ["outcome"], registry=r)
        self.group_events = Gauge("eddy_group_events", "Labelled events learned per group", P + ["group"],
                                  registry=r)
        self.group_loss = Gauge("eddy_group_loss", "Cumulative squared loss per group and prediction rule",
                                P + ["group", "rule"], registry=r)
        self.group_regret = Gauge("eddy_group_regret", "Regret per group against the best fixed linear model in "
                                  "hindsight on the group's events", P + ["group", "rule"], registry=r)
        self.broker_reconnects = Counter("eddy_kafka_client_rebuilds_total",
                                         "Kafka clients rebuilt after a fatal error or broker loss",
                                         P + ["client"], registry=r)
