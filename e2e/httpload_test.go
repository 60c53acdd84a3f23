package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// loadResult is httpload's last output line.
type loadResult struct {
	OK, Failed int
	// Hosts counts answers by the container that gave them (the
	// echoserver's host= field).
	Hosts map[string]int
	// Errors holds the first failures, for the test's message.
	Errors []string
	P99ms  float64
}

// helperHTTPLoad keeps -conns keep-alive connections busy for -for, each
// sending requests back to back to -url with Host -host: mostly the
// echoserver's small answer, every eighth a -big-byte /bytes answer whose
// content it checks (ChaCha8 with a zero seed). It prints a loadResult.
func helperHTTPLoad(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("httpload", flag.ContinueOnError)
	url := fs.String("url", "", "base URL")
	host := fs.String("host", "", "Host header")
	conns := fs.Int("conns", 16, "concurrent keep-alive connections")
	dur := fs.Duration("for", 3*time.Second, "how long")
	big := fs.Int("big", 256<<10, "size of the large answers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	want := make([]byte, *big)
	rand.NewChaCha8([32]byte{}).Read(want)
	tr := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	defer tr.CloseIdleConnections()

	var mu sync.Mutex
	res := loadResult{Hosts: map[string]int{}}
	var lat []time.Duration
	fail := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if len(res.Errors) < 10 {
			res.Errors = append(res.Errors, fmt.Sprintf(format, a...))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				path, large := fmt.Sprintf("/w%d/r%d", w, i), i%8 == 7
				if large {
					path = fmt.Sprintf("/bytes?n=%d", *big)
				}
				// Not ctx: a request under way when the time is up
				// finishes, so none counts as failed for being cut.
				req, _ := http.NewRequest("GET", *url+path, nil)
				req.Host = *host
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					fail("%s: %v", path, err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				switch {
				case err != nil:
					fail("%s: read body: %v", path, err)
				case resp.StatusCode != 200:
					fail("%s: status %d %q", path, resp.StatusCode, body)
				case large && !bytes.Equal(body, want):
					fail("%s: %d bytes, not the expected content", path, len(body))
				case !large && !strings.HasPrefix(string(body), "host="):
					fail("%s: body %q", path, body)
				default:
					mu.Lock()
					res.OK++
					lat = append(lat, took)
					if !large {
						h, _, _ := strings.Cut(strings.TrimPrefix(string(body), "host="), " ")
						res.Hosts[h]++
					}
					mu.Unlock()
				}
			}
		}()
	}
	fmt.Fprintf(stdout, "ready loading\n")
	wg.Wait()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P99ms = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	return json.NewEncoder(stdout).Encode(res)
}
