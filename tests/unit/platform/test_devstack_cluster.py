"""The devstack's Kafka configuration: one node on its own, or three in one quorum."""

from __future__ import annotations

from pathlib import Path

import pytest
from punchcard_devstack import DevStack, DevStackError
from punchcard_devstack.kafka import server_properties
from punchcard_platform.settings import Settings


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_single_node_is_its_own_quorum_and_replicates_nothing() -> None:
    """One node: a standalone controller, internal topics on one replica."""
    props = _properties(
        server_properties(node_id=1, port=9092, controller_port=9093, data_dir=Path("/d"))
    )
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in props
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"


def test_three_nodes_share_a_static_quorum_and_replicate_internal_topics_thrice() -> None:
    """Each node names all three voters; offsets and defaults: 3 replicas, 2 in sync."""
    voters = [(1, 7001), (2, 7002), (3, 7003)]
    props = _properties(
        server_properties(
            node_id=2, port=9092, controller_port=7002, data_dir=Path("/d"), voters=voters
        )
    )
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003"
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"


def test_a_stack_without_brokers_is_refused() -> None:
    """Zero brokers is a mistake, said at once."""
    with pytest.raises(DevStackError, match="at least one broker"):
        DevStack(brokers=0)


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_topics_need_all_but_one_replica_in_sync_unless_told(replicas: int, in_sync: int) -> None:
    """min.insync.replicas defaults to one less than the replication factor, at least 1."""
    assert Settings(topic_replication_factor=replicas).min_insync_replicas == in_sync


def test_more_replicas_in_sync_than_exist_is_a_configuration_error() -> None:
    """No acks=all send could ever be acknowledged: refused at start-up."""
    with pytest.raises(ValueError, match="MIN_INSYNC_REPLICAS"):
        Settings(topic_replication_factor=1, topic_min_insync_replicas=2)
