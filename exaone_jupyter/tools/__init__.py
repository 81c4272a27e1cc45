"""Tools: the notebook's Python functions, described to a model, called when it asks.

``describe`` turns a function into the JSON description a chat template lists (its name,
docstring and parameters, from the signature and type hints through pydantic) and checks a
call's arguments against it; ``calls`` reads the calls a model wrote; ``results`` turns what a
tool returned into the text the model reads. No IPython here: the UI looks names up and asks the
user; the session runs the loop.
"""

from .describe import Tool, describe, describe_all

__all__ = ["Tool", "describe", "describe_all"]
