package main

import (
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://localhost:1/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.66ms    1.02ms  27.13ms   80.00%
    Req/Sec    19.00k     1.00k   21.00k    70.00%
  Latency Distribution
     50%  940.00us
     75%    2.00ms
     90%    2.90ms
     99%   16.079999ms
  190000 requests in 5.00s, 20.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  38000.50
Transfer/sec:      4.00MB
`
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"rps", parseWrk([]byte(out)).rps, 38000.5},
		{"p50", parseWrk([]byte(out)).p50, 940 * time.Microsecond},
		{"p90", parseWrk([]byte(out)).p90, 2900 * time.Microsecond},
		{"p99", parseWrk([]byte(out)).p99, 16080 * time.Microsecond},
		{"max", parseWrk([]byte(out)).max, 27130 * time.Microsecond},
		{"err", parseWrk([]byte(out)).err, "Non-2xx or 3xx responses: 3; "},
		{"empty", parseWrk(nil), result{}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
