"""A clean stop leaves a snapshot the next start uses instead of replaying the journal; a kill -9
leaves none, and the start after it replays. Either way the same messages come back."""

from store_wire import DurableClient


def recovered(server):
    c = DurableClient(server.host, server.port)
    info = c.conn.call("server_info")["store"]["recovered"]
    c.close()
    return info


def test_a_clean_stop_restarts_from_its_snapshot_and_a_kill_9_replays(spawn_server, tmp_path):
    server = spawn_server("minibroker", data_dir=tmp_path / "data")
    c = DurableClient(server.host, server.port)
    c.queue("plain")
    c.queue("ttl", arguments={"x-message-ttl": 600_000})
    c.confirm_select()
    for i in range(300):
        c.publish("plain", b"p%d" % i)
    for i in range(50):
        c.publish("ttl", b"t%d" % i)
    c.wait_confirms()
    c.consume("plain", prefetch=10)              # ten delivered and not acked: redelivered later
    c.wait_for(lambda: len(c.deliveries) >= 10, 10, "ten deliveries")
    c.close()
    assert server.stop() == 0
    assert (tmp_path / "data" / "journal" / "clean-stop.snapshot").exists()
    server.start()
    info = recovered(server)
    assert info["from_snapshot"] and info["messages"] == 350
    assert not (tmp_path / "data" / "journal" / "clean-stop.snapshot").exists()
    c = DurableClient(server.host, server.port)
    plain = c.drain("plain", ack=False)
    assert [b for b, _ in plain] == [b"p%d" % i for i in range(300)]
    assert [r for _, r in plain] == [True] * 10 + [False] * 290
    assert [b for b, _ in c.drain("ttl", ack=False)] == [b"t%d" % i for i in range(50)]
    c.close()                                    # its consumers would take what follows
    c = DurableClient(server.host, server.port)
    c.confirm_select()
    for i in range(5):
        c.publish("plain", b"after-%d" % i)
    c.wait_confirms()
    c.close()
    server.kill()
    server.start()
    info = recovered(server)
    assert not info["from_snapshot"]
    c = DurableClient(server.host, server.port)
    assert [b for b, _ in c.drain("plain", ack=False)] == [b"after-%d" % i for i in range(5)]
    c.close()
