// A gRPC server in Go (grpc-go from Debian, no generated code): demo.Echo
// with Say (echoes its request), Stream (3 messages) and Missing (fails with
// NOT_FOUND), as tests/grpc_echo_server.py does; messages are raw bytes.
// Usage: grpc-echo HOST:PORT (prints "listening" when ready). Built by
// tests/h2.rs in GOPATH mode against Debian's golang-google-grpc-dev.
// `grpc-echo client HOST:PORT` is the client instead, like the Python one
// of tests/h2.rs: calls per stdin line (`say N`, `stream N`, `missing N`),
// "ok" after each line, one connection for all (made at the first line). With GRPC_TLS_CERT and
// GRPC_TLS_KEY set, the server speaks TLS (Go's crypto/tls) with that
// certificate; with GRPC_TLS=1 the client does (not verifying it).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func client(addr string) {
	security := grpc.WithInsecure()
	if os.Getenv("GRPC_TLS") == "1" {
		security = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))
	}
	// Connects at the first line: a test can start the client, then the
	// trace, and still have the whole connection traced.
	var conn *grpc.ClientConn
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if conn == nil {
			var err error
			if conn, err = grpc.Dial(addr, security, grpc.WithBlock()); err != nil {
				fail("dial %s: %v", addr, err)
			}
			defer conn.Close()
		}
		var what string
		var n int
		if _, err := fmt.Sscan(in.Text(), &what, &n); err != nil {
			fail("bad line %q", in.Text())
		}
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			switch what {
			case "say":
				req, out := []byte("hi"), []byte(nil)
				if err := conn.Invoke(ctx, "/demo.Echo/Say", &req, &out); err != nil || !bytes.Equal(out, req) {
					fail("Say: %v %q", err, out)
				}
			case "stream":
				st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/demo.Echo/Stream")
				req := []byte("s")
				if err == nil {
					err = st.SendMsg(&req)
				}
				if err == nil {
					err = st.CloseSend()
				}
				got := 0
				for err == nil {
					var m []byte
					if err = st.RecvMsg(&m); err == nil {
						got++
					}
				}
				if err != io.EOF || got != 3 {
					fail("Stream: %v after %d messages", err, got)
				}
			default:
				req, out := []byte("k1"), []byte(nil)
				err := conn.Invoke(ctx, "/demo.Echo/Missing", &req, &out)
				if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such key: k1" {
					fail("Missing: %v", err)
				}
			}
			cancel()
		}
		fmt.Println("ok")
	}
}

func main() {
	encoding.RegisterCodec(raw{})
	if len(os.Args) == 3 && os.Args[1] == "client" {
		client(os.Args[2])
		return
	}
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var opts []grpc.ServerOption
	if cert := os.Getenv("GRPC_TLS_CERT"); cert != "" {
		creds, err := credentials.NewServerTLSFromFile(cert, os.Getenv("GRPC_TLS_KEY"))
		if err != nil {
			fail("tls: %v", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	s := grpc.NewServer(opts...)
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
