package main

import (
	"strings"
	"testing"
)

func TestUnitText(t *testing.T) {
	u := unitText("/usr/local/bin/uncloud", "/var/lib/uncloud")
	for _, want := range []string{
		"ExecStart=/usr/local/bin/uncloud agent --data-dir /var/lib/uncloud\n",
		"Restart=always\n",
		"WantedBy=multi-user.target\n",
		"After=network-online.target\n",
	} {
		if !strings.Contains(u, want) {
			t.Errorf("unit lacks %q:\n%s", want, u)
		}
	}
	u = unitText("/usr/local/bin/uncloud", "/var/lib/uncloud", metricsFlags{MetricsAddr: "mesh:9101"}.args()...)
	if want := "ExecStart=/usr/local/bin/uncloud agent --data-dir /var/lib/uncloud --metrics-addr mesh:9101\n"; !strings.Contains(u, want) {
		t.Errorf("unit lacks %q:\n%s", want, u)
	}
}
