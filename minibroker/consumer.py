"""A push consumer: a queue's subscription on one channel, and how much more it may be sent.

`credit()` is the number of further unacked deliveries prefetch allows right now: the
consumer's own limit (basic_qos with global=false, fixed when the consumer was created, as in
RabbitMQ) and the channel's shared limit (basic_qos with global=true), and zero while the
client's connection is not reading (backpressure) or its channel is stopped (`Channel.flow`). No-ack consumers have no prefetch limit; the
queue caps what one turn delivers instead (`MessageQueue.drain`).
"""

UNLIMITED = 1 << 30


class Consumer:
    __slots__ = ("tag", "queue", "channel", "no_ack", "exclusive", "prefetch", "unacked", "arguments")

    def __init__(self, tag, queue, channel, no_ack, exclusive, prefetch, arguments):
        self.tag = tag
        self.queue = queue
        self.channel = channel
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch      # 0 = unlimited
        self.unacked = 0
        self.arguments = arguments

    def credit(self) -> int:
        channel = self.channel
        if channel.session.paused or channel.flow_stopped:
            return 0
        if self.no_ack:
            return UNLIMITED
        credit = self.prefetch - self.unacked if self.prefetch else UNLIMITED
        if channel.global_prefetch:
            shared = channel.global_prefetch - len(channel.unacked)
            if shared < credit:
                credit = shared
        return credit

    def __repr__(self):
        return f"<Consumer {self.tag!r} on {self.queue.name!r}>"
