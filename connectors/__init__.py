"""Sources and sinks: Kafka (kafka-python, confluent-kafka), JSON-lines files, the embedded broker.

Connectors move bytes and report positions; they know no learner.
"""
