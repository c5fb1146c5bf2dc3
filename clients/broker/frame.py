"""pika's `frame.Method`: what the synchronous channel methods return (`result.method.queue`)."""


class Method:
    __slots__ = ("channel_number", "method")

    def __init__(self, channel_number, method):
        self.channel_number = channel_number
        self.method = method

    @property
    def NAME(self):
        return "Method"

    def __repr__(self):
        return f"<METHOD(['channel_number={self.channel_number}', 'method={self.method!r}'])>"
