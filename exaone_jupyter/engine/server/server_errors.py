"""A failed request to an OpenAI-compatible server, in one sentence that says what to do.

The openai client raises a type per failure (refused connection, timeout, 401, 404, 5xx, a
stream cut short); each gets the server's own words where it gave some, and the next step.
"""

from __future__ import annotations

from ...errors import ExaoneError

INSTALL_HINT = "pip install 'exaone-jupyter[remote]'"


class ServerUnreachable(ExaoneError):
    """The request did not reach the server (refused, timed out, no route): a map stops sending
    its other rows, which would fail the same way."""


class ReplyCutShort(ExaoneError):
    """The server ended the stream without a finish reason. llama-cpp-python's server does this
    to the reply it is streaming when another request arrives (unless started with
    ``--interrupt_requests False``), so a map asks such rows again, one at a time."""


def openai_module():
    """openai, imported at the first connect (not by importing this package)."""
    try:
        import openai
    except ImportError:
        raise ExaoneError(
            "Talking to a server needs the openai package; install it with "
            f"{INSTALL_HINT} and restart the kernel."
        ) from None
    return openai


def failed_request(err: BaseException, *, url: str, timeout: float, api_key_env: str | None) -> str:
    """One sentence for a failed request, saying what to do."""
    openai = openai_module()
    the_server = f"The server at {url}"
    if isinstance(err, openai.APITimeoutError):
        return (
            f"{the_server} did not answer within {timeout:g} s; check that "
            "it is running and not overloaded, then try again."
        )
    if isinstance(err, openai.APIConnectionError):
        reason = root_cause(err)
        if "refused" in reason.lower():
            return (
                f"Could not connect to {url} (connection refused); check that the "
                "server is running and that the host and port are right."
            )
        return (
            f"Could not reach {url} ({reason}); check that the server is running "
            "and that the host and port are right."
        )
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        code = getattr(err, "status_code", 401)
        if api_key_env:
            return (
                f"{the_server} refused the API key in ${api_key_env} "
                f"({code}); set {api_key_env} to the server's key and connect again."
            )
        return (
            f"{the_server} needs an API key ({code}); put it in an "
            "environment variable and connect with --api-key-env VAR."
        )
    if isinstance(err, openai.NotFoundError):
        return (
            f"{the_server} answered 404 ({server_message(err)}); check "
            "the URL (usually ending in /v1) and the model name."
        )
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        message = server_message(err)
        if code >= 500:
            return f"{the_server} failed ({code}: {message}); check the server's log and try again."
        return f"The server rejected the request ({code}: {message}); change it and try again."
    return f"The request to {url} failed ({short(err)}); check the server and try again."


def broken_reply(err: BaseException, *, url: str, timeout: float, kept: bool) -> str:
    """One sentence for a stream that broke off, saying whether the partial reply is kept."""
    openai = openai_module()
    if isinstance(err, openai.APITimeoutError):
        why = f"no data for {timeout:g} s"
    elif isinstance(err, openai.APIStatusError) or type(err) is openai.APIError:
        why = server_message(err)
    else:
        why = root_cause(err)
    if kept:
        return (
            f"The server at {url} broke off the reply ({why}); the partial reply is "
            "kept, check the server and ask again."
        )
    return (
        f"The server at {url} broke off the reply before any text came ({why}); "
        "check the server and ask again, or shorten the conversation if the prompt may be "
        "longer than its context (`%%exaone --new` starts afresh)."
    )


def short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def root_cause(err: BaseException) -> str:
    """The innermost exception's message: 'Connection refused' rather than 'Connection error.'"""
    seen = err
    while (inner := seen.__cause__ or seen.__context__) is not None:
        seen = inner
    text = short(seen)
    if "[Errno" in text and "]" in text:
        text = text.split("]", 1)[1].strip()
    return text.rstrip(".") or type(seen).__name__


def server_message(err: BaseException) -> str:
    """The server's own words from an error body (OpenAI, vLLM and llama.cpp shapes)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            body = inner.get("message") or inner.get("detail") or body
        elif isinstance(inner, str):
            body = inner
        if isinstance(body, dict) and body.get("detail"):
            body = body["detail"]
    if isinstance(body, str) and body.strip():
        return short(Exception(body)).rstrip(".")
    return short(Exception(getattr(err, "message", None) or str(err))).rstrip(".")
