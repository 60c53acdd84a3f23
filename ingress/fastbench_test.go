package ingress

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/uncloud-mesh/uncloud/record"
)

// BenchmarkProxyRequest measures one keep-alive GET through the ingress
// to a container that allocates nothing, with a client that allocates
// nothing: allocs/op are the ingress's own (plus the runtime's).
func BenchmarkProxyRequest(b *testing.B) {
	for _, mode := range []struct {
		name                        string
		netHTTP, metrics, noEvLoops bool
	}{{"fast", false, false, false}, {"fast-metrics", false, true, false},
		{"fast-goroutine", false, false, true}, {"net-http", true, false, false}} {
		b.Run(mode.name, func(b *testing.B) {
			st := openStore(b)
			in := startIngress(b, st, func(c *Config) {
				c.NetHTTPOnly = mode.netHTTP
				c.NoEventLoop = mode.noEvLoops
				c.Log = nil
				if mode.metrics {
					m, err := NewMetrics(prometheus.NewRegistry())
					if err != nil {
						b.Fatal(err)
					}
					c.Metrics = m
				}
			})
			port := freePort(b)
			ln, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n")
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						buf := make([]byte, 8<<10)
						n := 0
						for {
							k, err := c.Read(buf[n:])
							if err != nil {
								return
							}
							n += k
							for {
								i := bytes.Index(buf[:n], crlfcrlf)
								if i < 0 {
									break
								}
								n = copy(buf, buf[i+4:n])
								if _, err := c.Write(resp); err != nil {
									return
								}
							}
						}
					}()
				}
			}()
			put(b, st, &record.Service{Name: "web", Ports: []string{fmt.Sprintf("app.test:%d/http", port)}})
			put(b, st, container("c1", "web", "127.0.0.2"))
			eventually(b, "route", func() bool {
				resp, _, err := get(b, noRedirect, in, "app.test", "/")
				return err == nil && resp.StatusCode == 200
			})
			// A new connection: one that met a 404 stays with net/http.
			c, err := net.Dial("tcp", in.HTTPAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET / HTTP/1.1\r\nHost: app.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			buf := make([]byte, 4<<10)
			// The response the ingress gives, learnt once the route is up.
			want := 0
			eventually(b, "route", func() bool {
				c.Write(req)
				n, _ := c.Read(buf)
				want = n
				return bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200"))
			})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.Write(req)
				got := 0
				for got < want {
					n, err := c.Read(buf)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			b.StopTimer()
		})
	}
}
