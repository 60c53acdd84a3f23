package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// probe is the client: workers ask url (with Host host) one request after
// another, and every 100 ms it prints "count OK FAILED" (running totals);
// each failure also gets a line "fail <why>". It runs inside a lab host's
// network namespace, started by the bench as its own binary.
func probe(url, host string, workers int) {
	var ok, failed atomic.Int64
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var out sync.Mutex
	for range workers {
		go func() {
			for {
				req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
				req.Host = host
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					out.Lock()
					fmt.Printf("fail %v\n", err)
					out.Unlock()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				ok.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	for {
		time.Sleep(100 * time.Millisecond)
		out.Lock()
		fmt.Printf("count %d %d\n", ok.Load(), failed.Load())
		out.Unlock()
		os.Stdout.Sync()
	}
}
