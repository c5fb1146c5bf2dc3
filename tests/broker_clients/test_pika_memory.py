"""The pika-style client reuses its memory for the bulk of what it sends and receives: a publish
batch is encoded into a buffer the connection keeps (`RpcConnection.send_now`), deliveries are
received into one (`BufferedFrameDecoder`). With a fresh object per batch or per read, each
batch's few hundred KiB were memory new to the process, and on this kind of machine every 4 KiB
of it cost a page fault (about 0.14 faults per 256-byte message published, 0.08 per message
consumed). Counted with getrusage in a separate process; nothing is timed."""

import json

PROGRAM = '''
import json, resource, sys
from clients import broker as pika

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

n = int(sys.argv[1])
body = b"x" * 256
connection = pika.BlockingConnection(pika.ConnectionParameters(host="localhost"))
channel = connection.channel()
channel.queue_declare("memory")
for _ in range(2000):                      # warm up: the buffers reach their size
    channel.basic_publish(exchange="", routing_key="memory", body=body)
before = faults()
for _ in range(n):
    channel.basic_publish(exchange="", routing_key="memory", body=body)
connection.process_data_events(0)
published = faults() - before

channel.basic_qos(prefetch_count=1000)
seen = [0]
def on_message(ch, method, properties, got):
    seen[0] += 1
    if seen[0] % 100 == 0:
        ch.basic_ack(method.delivery_tag, multiple=True)
    if seen[0] == 2000:
        marks.append(faults())
    if seen[0] == n + 2000:
        ch.basic_ack(method.delivery_tag, multiple=True)
        ch.stop_consuming()
marks = []
channel.basic_consume("memory", on_message)
channel.start_consuming()
consumed = faults() - marks[0]
connection.close()
print(json.dumps({"published": published, "consumed": consumed}))
'''


def test_publishing_and_consuming_reuse_the_clients_buffers(run_program, tmp_path):
    n = 20_000
    path = tmp_path / "memory_program.py"
    path.write_text(PROGRAM)
    proc = run_program(str(path), str(n))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode(errors="replace")
    counts = json.loads(out.decode().strip().splitlines()[-1])
    # 20,000 messages of 256 B are 1,250 pages of bodies each way: a fault per fresh page
    # would be well over a thousand; reused buffers leave a few dozen.
    assert counts["published"] < n * 256 // 4096 // 4, counts
    assert counts["consumed"] < n * 256 // 4096 // 4, counts
