package runtime

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"
)

func testRules(wg string) Rules {
	return Rules{Subnet: netip.MustParsePrefix("10.210.3.0/24"), Mesh: netip.MustParsePrefix("10.210.0.0/16"),
		Bridge: "uncloud-br", MeshInterface: wg, MTU: 1420,
		AgentPorts: []HostPort{{"tcp", 7946}, {"udp", 7946}, {"tcp", 51822}},
		Join:       netip.MustParsePrefix("10.210.0.0/24"), JoinPort: 51821}
}

func TestRulesChains(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rules  Rules
		want   map[string][]string // chain -> rules that must be there, in this order
		absent []string            // substrings no rule may contain
	}{
		{"kernel mode", testRules("uncloud"), map[string][]string{
			"UNCLOUD-RAW": {
				"-i uncloud-br ! -s 10.210.3.0/24 -j DROP", "-i uncloud-br -s 10.210.3.1 -j DROP",
				// nothing from WireGuard leaves the mesh
				"-i uncloud ! -d 10.210.0.0/16 -j DROP",
				// the mesh only through WireGuard, the bridge or loopback (nat-unprotected)
				"-i uncloud -j RETURN", "-i uncloud-br -j RETURN", "-i lo -j RETURN",
				"-d 10.210.0.0/16 -j DROP", "-s 10.210.0.0/16 -j DROP",
			},
			"UNCLOUD-FWD": {
				"-i uncloud-br ! -s 10.210.3.0/24 -j DROP",
				"-i uncloud-br -o uncloud -s 10.210.3.0/24 -d 10.210.0.0/16 -j ACCEPT",
				"-i uncloud -o uncloud-br -s 10.210.0.0/16 -d 10.210.3.0/24 -j ACCEPT",
				"-i uncloud -j DROP", // no routing from the mesh into the LAN or other networks
				"-i uncloud-br ! -o uncloud-br -d 172.16.0.0/12 -j DROP",
				"-i uncloud-br ! -o uncloud-br -d 192.168.0.0/16 -j DROP",
				// egress RETURNs: Docker's isolation chains still apply
				"-i uncloud-br ! -o uncloud-br -s 10.210.3.0/24 ! -d 10.210.0.0/16 -j RETURN",
			},
			"UNCLOUD-IN": {
				"-i uncloud-br -s 10.210.3.0/24 -d 10.210.3.1 -p udp --dport 53 -j ACCEPT",
				"-i uncloud -s 10.210.0.0/24 -d 10.210.3.1 -p tcp --dport 51821 -j ACCEPT",
				"-i uncloud -s 10.210.0.0/24 -j DROP",
				"-i uncloud -d 10.210.3.1 -p udp --dport 53 -j ACCEPT",
				"-i uncloud -s 10.210.0.1/255.255.0.255 -d 10.210.3.1 -p tcp -m multiport --dports 7946,51822 -j ACCEPT",
				"-i uncloud -s 10.210.0.1/255.255.0.255 -d 10.210.3.1 -p udp -m multiport --dports 7946 -j ACCEPT",
				"-i uncloud -s 10.210.0.1/255.255.0.255 -j RETURN",
				"-i uncloud -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
				"-i uncloud -j DROP", "-i uncloud-br -j DROP",
			},
			"UNCLOUD-NAT": {
				"-s 10.210.3.0/24 -d 10.210.0.0/16 -j ACCEPT",
				"-s 10.210.3.0/24 ! -o uncloud-br -j MASQUERADE",
			},
			"UNCLOUD-MSS": {"-i uncloud-br -o uncloud -p tcp --tcp-flags SYN,RST SYN -m tcpmss --mss 1381:65535 -j TCPMSS --set-mss 1380"},
		}, []string{"-j ACCEPT -i uncloud-br ! -o uncloud-br -s 10.210.3.0/24 ! -d"}},
		{"netstack mode: no kernel path to the mesh", testRules(""), map[string][]string{
			"UNCLOUD-RAW": {"-i uncloud-br ! -s 10.210.3.0/24 -j DROP"},
			"UNCLOUD-NAT": {"-s 10.210.3.0/24 ! -o uncloud-br -j MASQUERADE"},
		}, []string{"-o uncloud ", "-i uncloud ", "TCPMSS", "-s 10.210.0.0/16 -j DROP", "-i lo"}},
		{"no join port: the join range is left to tun's filter", func() Rules { r := testRules("uncloud"); r.JoinPort = 0; return r }(),
			map[string][]string{"UNCLOUD-IN": {"-i uncloud -s 10.210.0.1/255.255.0.255 -j RETURN"}}, []string{"51821", "10.210.0.0/24"}},
		{"isolated containers: new connections dropped before any accept", func() Rules {
			r := testRules("uncloud")
			r.Isolate = []netip.Addr{netip.MustParseAddr("10.210.3.5")}
			return r
		}(), map[string][]string{"UNCLOUD-FWD": {
			"-o uncloud-br -d 10.210.3.5 -m conntrack --ctstate NEW -j DROP",
			"-i uncloud -o uncloud-br -s 10.210.0.0/16 -d 10.210.3.0/24 -j ACCEPT",
		}}, nil},
		{"tagged for tests", func() Rules { r := testRules("wg0"); r.Tag = "T"; return r }(), map[string][]string{
			"UNCLOUD-T-FWD": {"-i uncloud-br -o wg0 -s 10.210.3.0/24 -d 10.210.0.0/16 -j ACCEPT"},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chains := map[string]Chain{}
			for _, c := range tc.rules.Chains() {
				chains[c.Name] = c
				for _, r := range c.Rules {
					for _, a := range tc.absent {
						if strings.Contains(r+" ", a) {
							t.Errorf("%s has %q, which must not be there", c.Name, r)
						}
					}
					if strings.Contains(r, "-j ACCEPT") && strings.Contains(r, "! -o "+tc.rules.Bridge) && !strings.Contains(r, "-o "+tc.rules.MeshInterface+" ") {
						t.Errorf("%s accepts egress (%q): it must RETURN so Docker's isolation applies", c.Name, r)
					}
				}
			}
			for name, rules := range tc.want {
				c, ok := chains[name]
				if !ok {
					t.Errorf("chain %s missing", name)
					continue
				}
				last := -1
				for _, r := range rules {
					i := slices.Index(c.Rules, r)
					if i < 0 {
						t.Errorf("%s lacks %q; has %q", name, r, c.Rules)
						continue
					}
					if i < last {
						t.Errorf("%s: %q comes before a rule listed ahead of it", name, r)
					}
					last = i
				}
			}
			// The anti-spoofing drop must come before any accept.
			if fwd, ok := chains[tc.rules.chain("FWD")]; ok && !strings.HasSuffix(fwd.Rules[0], "-j DROP") {
				t.Errorf("first FWD rule is %q, want the spoofing drop", fwd.Rules[0])
			}
		})
	}
}

func TestRestoreScript(t *testing.T) {
	s := testRules("uncloud").RestoreScript()
	for _, want := range []string{"*raw\n:UNCLOUD-RAW - [0:0]\n", "*filter\n:UNCLOUD-FWD - [0:0]\n:UNCLOUD-IN - [0:0]\n", "*nat\n", "*mangle\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("restore script lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "COMMIT\n"); n != 4 {
		t.Errorf("%d COMMITs, want 4 (one per table)", n)
	}
	if strings.Contains(s, "-A FORWARD") || strings.Contains(s, "-A DOCKER-USER") || strings.Contains(s, "\n-F ") || strings.Contains(s, "\n-X ") {
		t.Errorf("restore script touches chains it does not own:\n%s", s)
	}
}

func TestNetworkOptions(t *testing.T) {
	old := networkOptions("uncloud-br", 1420, 20)
	if old[optGatewayMode] != "" || old[optMasquerade] != "false" || old[optMTU] != "1420" || old[optBridgeName] != "uncloud-br" {
		t.Errorf("Docker 20 options = %v", old)
	}
	if n := networkOptions("uncloud-br", 1420, 28); n[optGatewayMode] != "nat-unprotected" {
		t.Errorf("Docker 28 options lack the gateway mode: %v", n)
	}
}

func TestNetworkMismatch(t *testing.T) {
	subnet := netip.MustParsePrefix("10.210.3.0/24")
	gw := netip.MustParseAddr("10.210.3.1")
	want := networkOptions("uncloud-br", 1420, 20)
	good := func() network.Inspect {
		return network.Inspect{Driver: "bridge",
			IPAM:    network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.210.3.0/24", Gateway: "10.210.3.1"}}},
			Options: map[string]string{optBridgeName: "uncloud-br", optMTU: "1420", optMasquerade: "false"}}
	}
	for _, tc := range []struct {
		name   string
		change func(*network.Inspect)
		want   string
	}{
		{"matches", func(*network.Inspect) {}, ""},
		{"driver", func(n *network.Inspect) { n.Driver = "overlay" }, `driver is "overlay"`},
		{"subnet", func(n *network.Inspect) { n.IPAM.Config[0].Subnet = "10.210.4.0/24" }, `subnet is "10.210.4.0/24"`},
		{"gateway", func(n *network.Inspect) { n.IPAM.Config[0].Gateway = "10.210.3.254" }, "gateway is 10.210.3.254"},
		{"mtu", func(n *network.Inspect) { n.Options[optMTU] = "1500" }, `"1500", not "1420"`},
		{"masquerade default", func(n *network.Inspect) { delete(n.Options, optMasquerade) }, `enable_ip_masquerade is "true"`},
		{"bridge", func(n *network.Inspect) { n.Options[optBridgeName] = "br-x" }, `"br-x"`},
	} {
		n := good()
		tc.change(&n)
		got := networkMismatch(n, subnet, gw, want)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: mismatch = %q, want %q", tc.name, got, tc.want)
		}
		// Only an MTU that differs may be kept while containers are attached.
		if only := onlyMTUDiffers(n, subnet, gw, want); only != (tc.name == "mtu") {
			t.Errorf("%s: onlyMTUDiffers = %v", tc.name, only)
		}
	}
}
