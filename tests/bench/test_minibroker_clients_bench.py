"""`bench/minibroker_clients.py` runs end to end on a small count: every message is delivered
and each figure it prints, CPU per message included, is there and positive (no speed is
asserted: speed is measured by running the bench, not here)."""

from bench import minibroker_clients


def test_the_pika_style_run_reports_rates_and_cpu_per_message(capsys):
    # 20,000 messages: the server's CPU is read from /proc in 10 ms ticks, and at ~2.6 us per
    # message 3,000 of them could take less than one tick and read as 0.
    summary = minibroker_clients.main(["--messages", "20000", "--runs", "1"])
    for key in ("producer_msgs_per_s", "consumer_msgs_per_s", "end_to_end_msgs_per_s",
                "producer_cpu_us_per_msg", "consumer_cpu_us_per_msg", "server_cpu_us_per_msg"):
        assert summary[key]["median"] > 0, key
    assert "consumer_cpu_us_per_msg" in capsys.readouterr().out


def test_publish_forms_measures_every_common_form_of_basic_publish():
    forms = minibroker_clients.main(["--publish-forms", "--messages", "300", "--runs", "1"])
    assert set(forms) == {"keywords", "positional", "properties reused", "properties per message",
                          "properties per message, 2 fields, DeliveryMode", "mandatory=True", "str body"}
    assert all(us > 0 for us in forms.values())
