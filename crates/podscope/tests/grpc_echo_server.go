// A gRPC server in Go (grpc-go from Debian, no generated code): demo.Echo
// with Say (echoes its request), Stream (3 messages) and Missing (fails with
// NOT_FOUND), as tests/grpc_echo_server.py does; messages are raw bytes.
// Usage: grpc-echo HOST:PORT (prints "listening" when ready). Built by
// tests/h2.rs in GOPATH mode against Debian's golang-google-grpc-dev.
package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// raw replaces the proto codec: a message is its bytes.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

func say(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

func missing(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return nil, status.Error(codes.NotFound, "no such key: k1")
}

func stream(_ interface{}, s grpc.ServerStream) error {
	var in []byte
	if err := s.RecvMsg(&in); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		out := append(append([]byte(nil), in...), byte(i))
		if err := s.SendMsg(&out); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	encoding.RegisterCodec(raw{})
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer()
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "demo.Echo",
		HandlerType: (*interface{})(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Say", Handler: say},
			{MethodName: "Missing", Handler: missing},
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "Stream", Handler: stream, ServerStreams: true},
		},
	}, struct{}{})
	fmt.Println("listening")
	if err := s.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
