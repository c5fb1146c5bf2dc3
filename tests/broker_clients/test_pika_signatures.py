"""The pika-style client keeps pika 1.3's call signatures: names, order and defaults.

A pika program passes arguments by position as often as by keyword, so drifting from pika's
order breaks programs silently. The expected signatures are pika 1.3's (BlockingConnection,
BlockingChannel, BasicProperties, ConnectionParameters).
"""

import inspect

import pytest

from clients import broker as pika

pytestmark = pytest.mark.timeout(30)

EMPTY = inspect.Parameter.empty

CHANNEL = {
    "basic_ack": [("delivery_tag", 0), ("multiple", False)],
    "basic_nack": [("delivery_tag", 0), ("multiple", False), ("requeue", True)],
    "basic_reject": [("delivery_tag", 0), ("requeue", True)],
    "basic_consume": [("queue", EMPTY), ("on_message_callback", EMPTY), ("auto_ack", False),
                      ("exclusive", False), ("consumer_tag", None), ("arguments", None)],
    "basic_cancel": [("consumer_tag", EMPTY)],
    "basic_get": [("queue", EMPTY), ("auto_ack", False)],
    "basic_publish": [("exchange", EMPTY), ("routing_key", EMPTY), ("body", EMPTY), ("properties", None),
                      ("mandatory", False)],
    "basic_qos": [("prefetch_size", 0), ("prefetch_count", 0), ("global_qos", False)],
    "basic_recover": [("requeue", False)],
    "cancel": [],
    "close": [("reply_code", 0), ("reply_text", "Normal shutdown")],
    "confirm_delivery": [],
    "consume": [("queue", EMPTY), ("auto_ack", False), ("exclusive", False), ("arguments", None),
                ("inactivity_timeout", None)],
    "exchange_bind": [("destination", EMPTY), ("source", EMPTY), ("routing_key", ""), ("arguments", None)],
    "exchange_declare": [("exchange", EMPTY), ("exchange_type", pika.ExchangeType.direct), ("passive", False),
                         ("durable", False), ("auto_delete", False), ("internal", False), ("arguments", None)],
    "exchange_delete": [("exchange", None), ("if_unused", False)],
    "exchange_unbind": [("destination", None), ("source", None), ("routing_key", ""), ("arguments", None)],
    "queue_bind": [("queue", EMPTY), ("exchange", EMPTY), ("routing_key", None), ("arguments", None)],
    "queue_declare": [("queue", EMPTY), ("passive", False), ("durable", False), ("exclusive", False),
                      ("auto_delete", False), ("arguments", None)],
    "queue_delete": [("queue", EMPTY), ("if_unused", False), ("if_empty", False)],
    "queue_purge": [("queue", EMPTY)],
    "queue_unbind": [("queue", EMPTY), ("exchange", None), ("routing_key", None), ("arguments", None)],
    "start_consuming": [],
    "stop_consuming": [("consumer_tag", None)],
    "add_on_return_callback": [("callback", EMPTY)],
    "add_on_cancel_callback": [("callback", EMPTY)],
    "get_waiting_message_count": [],
}

CONNECTION = {
    "__init__": [("parameters", None), ("_impl_class", None)],
    "add_callback_threadsafe": [("callback", EMPTY)],
    "call_later": [("delay", EMPTY), ("callback", EMPTY)],
    "remove_timeout": [("timeout_id", EMPTY)],
    "close": [("reply_code", 200), ("reply_text", "Normal shutdown")],
    "process_data_events": [("time_limit", 0)],
    "sleep": [("duration", EMPTY)],
    "channel": [("channel_number", None)],
}

PROPERTIES = ["content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
              "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]


def params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", sorted(CHANNEL))
def test_blocking_channel_signature(name):
    assert params(getattr(pika.BlockingChannel, name)) == CHANNEL[name]


@pytest.mark.parametrize("name", sorted(CONNECTION))
def test_blocking_connection_signature(name):
    assert params(getattr(pika.BlockingConnection, name)) == CONNECTION[name]


def test_basic_properties_fields_in_pika_order():
    assert [name for name, _ in params(pika.BasicProperties.__init__)] == PROPERTIES


def test_connection_parameters_positional_order():
    names = [name for name, _ in params(pika.ConnectionParameters.__init__)][:6]
    assert names == ["host", "port", "virtual_host", "credentials", "channel_max", "frame_max"]
