"""The kombu internals the recovery code reads (melanoma/recovery.py). They are not public API:
this test names each one, so that a kombu or Celery upgrade that moves them fails here, loudly,
instead of silently turning dead-worker reclaim and lost-message recovery off."""

import inspect

from kombu.transport import redis as kombu_redis


def test_redis_channel_still_has_what_recovery_reads():
    channel = kombu_redis.Channel
    assert channel.unacked_key == "unacked"
    assert channel.unacked_index_key == "unacked_index"
    assert hasattr(channel, "_q_for_pri") and hasattr(channel, "priority_steps")
    assert "leftmost" in inspect.signature(channel._do_restore_message).parameters


def test_redis_qos_still_restores_by_tag_and_tracks_delivered_messages():
    qos = kombu_redis.QoS
    assert list(inspect.signature(qos.restore_by_tag).parameters)[:3] == ["self", "tag", "client"]
    # The QoS records delivered, unacknowledged messages in _delivered (virtual transport base).
    from kombu.transport.virtual.base import QoS as VirtualQoS

    assert "_delivered" in inspect.getsource(VirtualQoS.__init__)
    assert "self.unacked_key" in inspect.getsource(qos.append)  # the hash entry recovery parses
    assert "dumps([message._raw, EX, RK])" in inspect.getsource(qos.append)
