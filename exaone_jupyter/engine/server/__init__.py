"""The remote engine: an OpenAI-compatible server (vLLM, llama-server, llama-cpp-python's)."""
