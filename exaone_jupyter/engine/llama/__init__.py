"""The local engine: llama.cpp through llama-cpp-python, in this process."""
