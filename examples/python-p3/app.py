"""A WASI 0.3 HTTP app in Python, built with componentize-py.

It exists so the WASI 0.3 tests also serve a component from a second
toolchain (besides Rust's `wasip3` crate). Build it with
`tests/support/python-component.sh`, which prints the .wasm's path.

Routes:
- `GET /`: `hello from python`;
- `GET /slow?ms=N`: waits N ms (default 1000) on the host's clock without
  blocking the instance, then answers `slow done`;
- anything else: 404.
"""

from urllib.parse import parse_qs, urlsplit

import componentize_py_async_support
import wit_world
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import monotonic_clock
from wit_world.imports.wasi_http_types import Fields, Request, Response

NANOS_PER_MS = 1_000_000


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        target = urlsplit(request.get_path_with_query() or "/")
        if target.path == "/":
            return text(200, "hello from python\n")
        if target.path == "/slow":
            try:
                ms = int(parse_qs(target.query).get("ms", ["1000"])[0])
            except ValueError:
                return text(400, "ms must be a whole number\n")
            # An async wait: the instance runs other requests meanwhile.
            await monotonic_clock.wait_for(max(ms, 0) * NANOS_PER_MS)
            return text(200, "slow done\n")
        return text(404, "not found\n")


def text(status: int, body: str) -> Response:
    """A text/plain response whose body is written after it is returned."""
    data = body.encode()
    writer, reader = wit_world.byte_stream()
    # No trailers: the future resolves to `ok(none)` once its writer is dropped.
    _, trailers = wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
        lambda: Ok(None)
    )
    headers = Fields.from_list(
        [("content-type", b"text/plain"), ("content-length", str(len(data)).encode())]
    )
    response, _ = Response.new(headers, reader, trailers)
    response.set_status_code(status)
    componentize_py_async_support.spawn(write_body(writer, data))
    return response


async def write_body(writer, data: bytes) -> None:
    with writer:
        await writer.write_all(data)
