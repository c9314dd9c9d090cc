// An HTTPS server and client on Go's own crypto/tls (no libssl), for
// tests/https.rs: the tls probe's Go hooks against a real Go program.
//
//	go-https server ADDR CERT KEY LOG   serves /, /big (40000 bytes), else 404;
//	                                    one "METHOD URI STATUS" line per request in LOG
//	go-https client URL N               N GETs of URL?i=<n> on one kept-alive
//	                                    connection; prints each status
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
)

func main() {
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case "client":
		n, _ := strconv.Atoi(os.Args[3])
		client(os.Args[2], n)
	}
}

func serve(addr, cert, key, logPath string) {
	log, err := os.Create(logPath)
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := 200
		switch r.URL.Path {
		case "/":
			io.WriteString(w, "hello\n")
		case "/big":
			w.Write([]byte(strings.Repeat("abcdefghij", 4000)))
		default:
			status = 404
			http.NotFound(w, r)
		}
		mu.Lock()
		fmt.Fprintf(log, "%s %s %d\n", r.Method, r.URL.RequestURI(), status)
		log.Sync()
		mu.Unlock()
	})
	s := &http.Server{
		Addr:    addr,
		Handler: h,
		// HTTP/1.1 only: no ALPN h2.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	panic(s.ListenAndServeTLS(cert, key))
}

func client(url string, n int) {
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	for i := 0; i < n; i++ {
		resp, err := c.Get(fmt.Sprintf("%s?i=%d", url, i))
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
}
