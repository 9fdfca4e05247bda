"""The sans-IO TCP connection machine (RFC 9293); see :mod:`ustack.tcp.state` for the overview."""
