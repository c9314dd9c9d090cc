# A gRPC server with generic handlers (no generated code), for
# tests/h2.rs and scripts/record-corpus.sh: demo.Echo/Say echoes its request,
# Stream answers with 3 messages, Missing fails with NOT_FOUND.
# Usage: python3 grpc_echo_server.py HOST:PORT (prints "listening" when ready)
import sys, grpc
from concurrent import futures

def say(req, ctx):
    return req

def stream(req, ctx):
    for i in range(3):
        yield req + bytes([i])

def missing(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such key: k1")

ident = lambda b: b
handlers = {
    "Say": grpc.unary_unary_rpc_method_handler(say, request_deserializer=ident, response_serializer=ident),
    "Stream": grpc.unary_stream_rpc_method_handler(stream, request_deserializer=ident, response_serializer=ident),
    "Missing": grpc.unary_unary_rpc_method_handler(missing, request_deserializer=ident, response_serializer=ident),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", handlers),))
server.add_insecure_port(sys.argv[1])
server.start()
print("listening", flush=True)
server.wait_for_termination()
