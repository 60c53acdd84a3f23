package main

import "testing"

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{name: "kernel format", status: "Name:\tuncloud\nVmPeak:\t 1906532 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   59000 kB\n", want: 61440},
		{name: "missing", status: "Name:\tuncloud\nVmRSS:\t   59000 kB\n", wantErr: true},
		{name: "no unit", status: "VmHWM:\t61440\n", wantErr: true},
		{name: "not a number", status: "VmHWM:\tlots kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmHWM([]byte(tt.status))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseVmHWM: err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseVmHWM = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestParsePing(t *testing.T) {
	out := []byte("PING 10.210.2.1 (10.210.2.1) 56(84) bytes of data.\n" +
		"64 bytes from 10.210.2.1: icmp_seq=1 ttl=64 time=0.512 ms\n" +
		"64 bytes from 10.210.2.1: icmp_seq=2 ttl=64 time=4.20 ms\n" +
		"64 bytes from 10.210.2.1: icmp_seq=4 ttl=64 time=1.00 ms\n")
	got := parsePing(out, 4)
	if got.recv != 3 || got.sent != 4 {
		t.Fatalf("recv/sent = %d/%d, want 3/4", got.recv, got.sent)
	}
	if got.min != 0.512 || got.p50 != 1.0 || got.max != 4.2 {
		t.Errorf("min/p50/max = %v/%v/%v, want 0.512/1/4.2", got.min, got.p50, got.max)
	}
	if none := parsePing([]byte("100% packet loss"), 5); none.recv != 0 || none.sent != 5 {
		t.Errorf("no replies: recv/sent = %d/%d, want 0/5", none.recv, none.sent)
	}
}
