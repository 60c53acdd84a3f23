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

func TestUserUnitText(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rootless bool
		want     []string
		not      []string
	}{
		{name: "rootless Docker", rootless: true, want: []string{
			"ExecStart=/home/u/bin/uncloud --connect /run/user/1000/uncloud.sock agent --data-dir /home/u/.local/share/uncloud --rootless\n",
			"After=network-online.target docker.service\n", "PartOf=docker.service\n", "Wants=docker.service\n",
			"WantedBy=default.target\n", "Restart=always\n",
		}},
		{name: "no Docker", want: []string{
			"ExecStart=/home/u/bin/uncloud --connect /run/user/1000/uncloud.sock agent --data-dir /home/u/.local/share/uncloud\n",
			"WantedBy=default.target\n",
		}, not: []string{"docker.service", "--rootless"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := userUnitText("/home/u/bin/uncloud", []string{"--connect", "/run/user/1000/uncloud.sock", "agent", "--data-dir", "/home/u/.local/share/uncloud"}, tc.rootless)
			for _, w := range tc.want {
				if !strings.Contains(u, w) {
					t.Errorf("unit lacks %q:\n%s", w, u)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(u, w) {
					t.Errorf("unit has %q:\n%s", w, u)
				}
			}
		})
	}
}
