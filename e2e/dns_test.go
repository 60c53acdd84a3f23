package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/crdt"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
)

// writeOwnContainers stops machine i's agent, writes container records
// into that machine's own store (its data dir, as the machine itself
// writes the containers it runs), and starts the agent again, which
// announces the new heads to the others.
//
// Why not a real container: the runtime (Docker per lab host) is built in
// parallel; until it lands, no API writes container records, and the
// records are what the resolver reads. The records written here are the
// ones the runtime writes: its own machine ID, running, an address in the
// machine's /24, published ports.
func (f *formed) writeOwnContainers(ctx context.Context, t *testing.T, i int, restart []string, cs ...*record.Container) {
	t.Helper()
	f.procs[i].Signal(syscall.SIGTERM)
	if err := f.procs[i].Wait(ctx); err != nil && f.procs[i].Alive() {
		t.Fatalf("stop agent on %s: %v", f.hosts[i].Name, err)
	}
	dir := filepath.Join(f.hosts[i].Dir, "lib", "state")
	store, err := crdt.Open(ctx, crdt.Config{Dir: dir, Name: cs[0].MachineID, Signer: hostSigner(t, f.hosts[i])})
	if err != nil {
		t.Fatalf("open %s's store: %v", f.hosts[i].Name, err)
	}
	for _, c := range cs {
		if err := store.Put(ctx, c.Key(), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	f.startAgent(ctx, t, i, restart...)
}

// dig asks the resolver at server from host i; it returns the sorted
// answer data (+short) and fails only when dig cannot run at all.
func dig(ctx context.Context, h *lab.Host, server, name, qtype string) ([]string, error) {
	out, err := h.Run(ctx, "dig", "@"+server, "+short", "+time=2", "+tries=1", name, qtype)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines, nil
}

// waitDig asks until the answers are want, and returns how long that took.
func waitDig(ctx context.Context, t *testing.T, h *lab.Host, server, name, qtype string, want []string, timeout time.Duration) time.Duration {
	t.Helper()
	return testkit.Eventually(t, fmt.Sprintf("%s asking %s for %s %s: want %v", h.Name, server, name, qtype, want), timeout, func() error {
		got, err := dig(ctx, h, server, name, qtype)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("answer %v", got)
		}
		return nil
	})
}

// setLink cuts or restores host i's only link to the internet (the far
// end of its eth0, in the internet namespace): a partition.
func (f *formed) setLink(ctx context.Context, t *testing.T, i int, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	out, err := exec.CommandContext(ctx, "ip", "-n", f.lab.InternetNS(), "link", "set", "v"+f.hosts[i].Name, state).CombinedOutput()
	if err != nil {
		t.Fatalf("link %s %s: %v: %s", f.hosts[i].Name, state, err, out)
	}
}

// TestDNS: three machines (m3 in netstack mode), a service "web" with two
// containers on each. Every name kind answers over the mesh from every
// machine's resolver; m3 cut off disappears from the answers of m1 and m2
// (and they from m3's) and comes back after the heal.
func TestDNS(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (Debian dnsutils; scripts/test installs it)")
	}
	ctx := context.Background()
	f := form(ctx, t, 3, map[int]bool{2: true})
	f.waitAllAlive(ctx, t, 60*time.Second)

	ms := f.machines(ctx, t, 0)
	byName := map[string]api.MachineInfo{}
	for _, m := range ms {
		byName[m.Name] = m
	}
	var all []string
	for i := range 3 {
		m := byName[fmt.Sprintf("m%d", i+1)]
		prefix := strings.TrimSuffix(m.Address, ".1")
		var cs []*record.Container
		for k := 1; k <= 2; k++ {
			addr := fmt.Sprintf("%s.%d", prefix, 10+k)
			all = append(all, addr)
			cs = append(cs, &record.Container{MachineID: m.ID, ID: fmt.Sprintf("c%d", k), Name: fmt.Sprintf("web-%d", k),
				Service: "web", Address: addr, State: "running", Created: time.Now().UTC(),
				Ports: []record.ContainerPort{{Port: 8080, Protocol: "tcp", Name: "http"}}})
		}
		restart := []string{"agent"}
		if i == 2 {
			restart = append(restart, "--userspace")
		}
		f.writeOwnContainers(ctx, t, i, restart, cs...)
	}
	slices.Sort(all)
	f.waitAllAlive(ctx, t, 60*time.Second)

	m1, m2, m3 := byName["m1"].Address, byName["m2"].Address, byName["m3"].Address

	if !t.Run("every resolver answers web.internal with all six containers", func(t *testing.T) {
		// Asked from h1 (m3's resolver lives in its netstack and is
		// reached through the tunnel).
		for _, server := range []string{m1, m2, m3} {
			took := waitDig(ctx, t, f.hosts[0], server, "web.internal", "A", all, 60*time.Second)
			t.Logf("resolver %s answers all 6 containers of web.internal (%v)", server, took.Round(time.Millisecond))
		}
	}) {
		return
	}

	if !t.Run("machine and container names, TCP, SRV and nearest answer", func(t *testing.T) {
		for name, want := range map[string][]string{
			"m2.machine.internal":       {m2},
			"M3.Machine.Internal":       {m3},
			"web-2.m3.machine.internal": {strings.TrimSuffix(m3, ".1") + ".12"},
		} {
			waitDig(ctx, t, f.hosts[0], m1, name, "A", want, 10*time.Second)
		}
		// TCP, to the netstack machine's resolver through the tunnel.
		if out, err := f.hosts[0].Run(ctx, "dig", "@"+m3, "+tcp", "+short", "m1.machine.internal"); err != nil || strings.TrimSpace(out) != m1 {
			t.Fatalf("dig +tcp @%s m1.machine.internal: %q %v", m3, out, err)
		}
		if got, err := dig(ctx, f.hosts[0], m1, "_http._tcp.web.internal", "SRV"); err != nil || len(got) != 6 || !strings.Contains(strings.Join(got, " "), "0 1 8080 web-1.m2.machine.internal.") {
			t.Fatalf("SRV: %v %v", got, err)
		}
		// nearest: this machine's containers first.
		out, err := f.hosts[0].Run(ctx, "dig", "@"+m1, "+short", "nearest.web.internal")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(out); len(got) != 6 || !strings.HasPrefix(got[0], strings.TrimSuffix(m1, "1")) ||
			!strings.HasPrefix(got[1], strings.TrimSuffix(m1, "1")) {
			t.Fatalf("nearest.web.internal on m1: %v, want m1's two containers first", got)
		}
	}) {
		return
	}

	if !t.Run("the CLI shows what m1 answers", func(t *testing.T) {
		var names api.DNSNames
		out, err := f.uncloud(ctx, t, 0, "dns", "ls", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &names) != nil {
			t.Fatalf("dns ls: %v\n%s", err, out)
		}
		found := false
		for _, n := range names.Names {
			if n.Name == "web.internal." && n.Type == "A" && len(n.Records) == 6 {
				found = true
			}
		}
		if !found {
			t.Fatalf("dns ls on m1 does not list web.internal with 6 addresses: %+v", names)
		}
		if out, err := f.uncloud(ctx, t, 0, "dns", "query", "web-1.m2.machine.internal"); err != nil || !strings.Contains(out, m2[:len(m2)-1]+"11") {
			t.Fatalf("dns query: %v\n%s", err, out)
		}
	}) {
		return
	}

	if !t.Run("m3 cut off: m1 and m2 drop its containers, m3 answers only its own", func(t *testing.T) {
		f.setLink(ctx, t, 2, false)
		cut := time.Now()
		without3 := all[:4]
		for i, server := range []string{m1, m2} {
			waitDig(ctx, t, f.hosts[i], server, "web.internal", "A", without3, 90*time.Second)
			waitDig(ctx, t, f.hosts[i], server, "m3.machine.internal", "A", nil, 10*time.Second)
		}
		t.Logf("m3's containers left m1's and m2's answers %v after the cut", time.Since(cut).Round(100*time.Millisecond))
		// m3, alone, answers only its own (asked through its local API:
		// its resolver lives in its netstack).
		testkit.Eventually(t, "m3 answering only its own 2 containers after the cut", 90*time.Second, func() error {
			out, err := f.uncloud(ctx, t, 2, "dns", "query", "web.internal", "-o", "json")
			if err != nil {
				return err
			}
			var a api.DNSAnswer
			if err := json.Unmarshal([]byte(out), &a); err != nil {
				return err
			}
			if len(a.Answer) != 2 {
				return fmt.Errorf("answers %s", out)
			}
			return nil
		})
	}) {
		return
	}

	t.Run("healed: m3's containers back in every answer", func(t *testing.T) {
		f.setLink(ctx, t, 2, true)
		healed := time.Now()
		waitDig(ctx, t, f.hosts[0], m1, "web.internal", "A", all, 90*time.Second)
		waitDig(ctx, t, f.hosts[1], m2, "web.internal", "A", all, 30*time.Second)
		waitDig(ctx, t, f.hosts[0], m3, "web.internal", "A", all, 30*time.Second)
		t.Logf("m3's containers back in every answer %v after the heal", time.Since(healed).Round(100*time.Millisecond))
	})
}
