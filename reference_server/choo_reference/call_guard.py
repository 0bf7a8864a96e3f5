"""What every call to the daemon passes before its handler (a grpc.aio
server interceptor):

- request bytes that do not decode as the method's request message are
  answered INVALID_ARGUMENT, naming the message and what is wrong, with one
  log line; grpc alone answers UNKNOWN and logs a traceback (R10);
- once the daemon has answered Shutdown and is going away, every new call is
  UNAVAILABLE "daemon is shutting down", never CANCELLED (R11);
- it counts the calls it let through that have not ended, so that the
  daemon, going away, can let them end (the Shutdown call's own answer
  among them) before it ends its clients' connections.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading

import grpc

from .jobs import shorten
from .watch import SHUTTING_DOWN

log = logging.getLogger("choo-ref")


class _Undecodable:
    """What a request's bytes become when they do not decode."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(deserialize):
    message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    type_name = message_type.full_name if message_type is not None else "the request message"

    # protobuf's message starts by naming the type, which ours names already.
    redundant = f"Error parsing message with type '{type_name}': "

    def decode(raw: bytes):
        try:
            return deserialize(raw)
        except Exception as error:
            reason = str(error).removeprefix(redundant)
            return _Undecodable(shorten(f"the request does not decode as {type_name}: "
                                        f"{reason}", 512))

    return decode


class _OpenCalls:
    """How many calls let through have not ended. A call is counted from
    its handler's first step to the moment grpc has sent its status (the
    context's done callback, run on the event loop); a plain handler starts
    on a thread of the pool, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        # Set once none is open, by whichever thread ends the last one.
        self._none_open: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def enter(self, context) -> None:
        with self._lock:
            self._open += 1
        done = getattr(context, "add_done_callback", None) or context.add_callback
        done(self._leave)

    def _leave(self, *_context) -> None:
        with self._lock:
            self._open -= 1
            if self._open == 0 and self._none_open is not None:
                loop, none_open = self._none_open
                loop.call_soon_threadsafe(none_open.set)

    async def wait_for_none(self, timeout_s: float) -> bool:
        """Whether every call let through ended within timeout_s."""
        with self._lock:
            if self._open == 0:
                return True
            none_open = asyncio.Event()
            self._none_open = (asyncio.get_running_loop(), none_open)
        try:
            await asyncio.wait_for(none_open.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


def _refuse_undecodable(behavior, method: str, calls: _OpenCalls):
    """behavior, answering an _Undecodable request INVALID_ARGUMENT and
    counted among the open calls; a coroutine, an async generator or a
    plain function as behavior is."""

    def refusal(request) -> str | None:
        if not isinstance(request, _Undecodable):
            return None
        log.warning("%s: %s; answered INVALID_ARGUMENT", method, request.message)
        return request.message

    if inspect.isasyncgenfunction(behavior):
        async def guarded_stream(request, context):
            calls.enter(context)
            message = refusal(request)
            if message is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            async for response in behavior(request, context):
                yield response
        return guarded_stream
    if inspect.iscoroutinefunction(behavior):
        async def guarded_coroutine(request, context):
            calls.enter(context)
            message = refusal(request)
            if message is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
            return await behavior(request, context)
        return guarded_coroutine

    def guarded(request, context):  # run on the server's thread pool
        calls.enter(context)
        message = refusal(request)
        if message is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        return behavior(request, context)
    return guarded


def _decode_guarded(method: str, handler: grpc.RpcMethodHandler,
                    calls: _OpenCalls) -> grpc.RpcMethodHandler:
    if handler.request_streaming or handler.request_deserializer is None:
        # A stream's messages are the servicer's to judge; such a call (server
        # reflection's) is not counted: at the end its connection ends it.
        return handler
    deserialize = _lenient(handler.request_deserializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _refuse_undecodable(handler.unary_stream, method, calls),
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(
        _refuse_undecodable(handler.unary_unary, method, calls),
        request_deserializer=deserialize,
        response_serializer=handler.response_serializer)


async def _unavailable(request, context):
    await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that answers UNAVAILABLE without running."""
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(_unavailable, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class CallGuard(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._closed = False
        self.open_calls = _OpenCalls()
        # method -> (the handler as registered, the guarded one), built once.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def close(self) -> None:
        """From now on every call is UNAVAILABLE: the daemon is going away."""
        self._closed = True

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED, as grpc answers
        if self._closed:
            return _refusing(handler)
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = (handler, _decode_guarded(method, handler, self.open_calls))
            self._guarded[method] = known
        return known[1]
