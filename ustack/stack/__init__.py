"""The sans-IO host: IPv4, ICMP echo, TCP demultiplexing, listeners (see :mod:`.host`)."""
