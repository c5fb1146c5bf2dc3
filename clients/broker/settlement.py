"""Which delivery tags of a channel are settled, so that acknowledgements can merge.

AMQP's `ack` with `multiple=True` settles every outstanding delivery of the channel up to a
tag. A client that knows every lower tag is already settled (acked, nacked, rejected, or
delivered with auto-ack) can therefore send one `multiple=True` ack in place of many single
ones without changing what the broker settles. `SettledTags` keeps that knowledge cheaply: a
`floor` below which (inclusive) every tag is settled, plus the settled tags above it, which
are folded into the floor as the gaps close. Tags count from 1 per channel and are handed out
in increasing order, which is what makes a prefix the right shape.

Both minibroker clients use it (`clients/broker/blocking_channel.py`,
`clients/aio_broker/channel.py`); it does no I/O.
"""


class SettledTags:
    __slots__ = ("floor", "above", "delivered_max")

    def __init__(self):
        self.floor = 0             # every tag <= floor is settled
        self.above: set = set()    # settled tags > floor
        self.delivered_max = 0     # the highest tag received (for `multiple` with tag 0)

    def settle(self, tag: int) -> bool:
        """Record one settled tag; True if every tag up to it is now settled."""
        floor = self.floor
        if tag == floor + 1:
            above = self.above
            if above:
                while tag + 1 in above:
                    tag += 1
                    above.discard(tag)
            self.floor = tag
            return True
        if tag > floor:
            self.above.add(tag)
        return False

    def settle_upto(self, tag: int) -> None:
        """Record that every tag up to `tag` is settled (a `multiple` ack or nack)."""
        if tag > self.floor:
            above = self.above
            if above:
                above = {t for t in above if t > tag}
                while tag + 1 in above:
                    tag += 1
                    above.discard(tag)
                self.above = above
            self.floor = tag
