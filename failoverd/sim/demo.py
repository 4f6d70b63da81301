"""sim.demo: the embedded demonstration (being built)."""


def main(*, keep_running: bool) -> int:
    raise NotImplementedError(f"demo keep_running={keep_running}: being built")
