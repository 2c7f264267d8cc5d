"""Backends: one module per way of running a model, all with the same interface.

A backend is built with the model, device, dtype and mode, then gives
  describe() -> fingerprint fields it knows (device_name, ...)
  options()  -> capture options that change the numbers
  records(texts, continuations=None) -> one dict of named float32/int64 arrays per text, lazily, in order
  run_batch(texts) -> one call of the model on a batch, synchronised, for --perf timings
"""


class BackendError(RuntimeError):
    """A model or device that cannot be used as asked; the message says what to do."""


BACKENDS = ("hf", "vllm", "openai")


def make_backend(name: str, **kwargs):
    """Builds the named backend; its heavy imports happen only here."""
    if name == "hf":
        from capture_agent.backends.hf import HFBackend

        return HFBackend(**kwargs)
    if name == "vllm":
        from capture_agent.backends.vllm import VLLMBackend

        return VLLMBackend(**kwargs)
    if name == "openai":
        from capture_agent.backends.openai import OpenAIBackend

        return OpenAIBackend(**kwargs)
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
