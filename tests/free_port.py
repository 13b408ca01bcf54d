"""A TCP port free right now, for a launcher that needs one named (accelerate's --main_process_port), so
that tests run side by side (``pytest -n``) never share a rendezvous. torch.distributed.run takes
``--standalone`` instead, which picks its own."""
import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
