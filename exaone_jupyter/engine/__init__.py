"""The engines: llama.cpp in this process (``local``) or an OpenAI-compatible server (``remote``)."""

from .threads import openmp_waits_passively

# Before any module of the engine imports llama_cpp, whose OpenMP runtime reads the policy once.
openmp_waits_passively()
