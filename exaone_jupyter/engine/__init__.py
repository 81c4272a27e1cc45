"""The engines: llama.cpp in this process (``local``) or an OpenAI-compatible server (``remote``)."""
