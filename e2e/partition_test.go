package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/agent"
	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/trust"
)

// TestJoinDuringPartition: five machines split 2|3 on the wire, and a new
// machine joins on each side at the same moment. The side with a majority
// admits its machine; the minority side refuses clearly (it cannot get a
// majority to promise a subnet) and changes nothing. After the heal, the
// refused machine joins again, and all seven converge with seven distinct
// subnets.
func TestJoinDuringPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := form(ctx, t, 5, map[int]bool{4: true})
	f.waitAllAlive(ctx, t, 30*time.Second)

	for _, name := range []string{"h6", "h7"} {
		h, err := f.lab.AddHost(ctx, name, lab.HostOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f.hosts = append(f.hosts, h)
	}
	f.procs = append(f.procs, nil, nil)
	minority := []*lab.Host{f.hosts[0], f.hosts[1], f.hosts[5]}
	majority := []*lab.Host{f.hosts[2], f.hosts[3], f.hosts[4], f.hosts[6]}
	split, err := f.lab.Partition(ctx, minority, majority)
	if err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			split.Heal(context.Background())
		}
	}()
	tokMinority := f.token(ctx, t, 0) // m1
	tokMajority := f.token(ctx, t, 2) // m3

	if !t.Run("2|3 split, a join on each side at once: the majority admits m7, the minority refuses m6", func(t *testing.T) {
		type result struct {
			out string
			err error
			dur time.Duration
		}
		minorityDone := make(chan result, 1)
		go func() {
			start := time.Now()
			out, err := f.hosts[5].Run(ctx, f.lab.Uncloud, "join", "--name", "m6", "--foreground", tokMinority)
			minorityDone <- result{out, err, time.Since(start)}
		}()
		start := time.Now()
		f.startAgent(ctx, t, 6, "join", "--name", "m7", "--foreground", tokMajority)
		t.Logf("majority-side join up in %v", time.Since(start).Round(10*time.Millisecond))

		res := <-minorityDone
		if res.err == nil {
			t.Fatalf("a join succeeded on the minority side of a 2|3 partition:\n%s", res.out)
		}
		msg := res.err.Error() + res.out
		if !strings.Contains(msg, "only 2 of 5 machines agreed") {
			t.Errorf("minority-side join refused, but not for the majority rule:\n%s", msg)
		}
		t.Logf("minority-side join refused after %v", res.dur.Round(10*time.Millisecond))
	}) {
		return
	}

	if !t.Run("m7 listed on the majority side with the lowest free subnet, the minority admitted nobody", func(t *testing.T) {
		// Once m7's record has replicated to m3.
		m7Subnet := ""
		took := testkit.Eventually(t, "m7 listed on m3", 60*time.Second, func() error {
			for _, m := range f.machines(ctx, t, 2) {
				if m.Name == "m7" {
					m7Subnet = m.Subnet
					return nil
				}
			}
			return fmt.Errorf("not listed")
		})
		if m7Subnet != "10.210.6.0/24" {
			t.Errorf("m7 got subnet %q on the majority side, want 10.210.6.0/24", m7Subnet)
		} else {
			t.Logf("m7's record reached m3 within %v", took.Round(10*time.Millisecond))
		}
		for _, i := range []int{0, 1} {
			for _, m := range f.machines(ctx, t, i) {
				if m.Name == "m6" {
					t.Errorf("%s lists the refused m6: %+v", f.hosts[i].Name, m)
				}
			}
		}
	}) {
		return
	}

	var healedAt time.Time
	if !t.Run("healed: the six machines converge", func(t *testing.T) {
		healedAt = time.Now()
		if err := split.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		healed = true
		// Six machines converge (h6 has not joined): wait on the six hosts.
		joined, procs := f.hosts, f.procs
		defer func() { f.hosts, f.procs = joined, procs }()
		f.hosts = []*lab.Host{joined[0], joined[1], joined[2], joined[3], joined[4], joined[6]}
		f.procs = []*lab.Process{procs[0], procs[1], procs[2], procs[3], procs[4], procs[6]}
		d := f.waitAllAlive(ctx, t, 60*time.Second)
		t.Logf("after the heal all six alive everywhere in %v", d.Round(10*time.Millisecond))
	}) {
		return
	}

	t.Run("m6 joins again: seven machines, seven distinct subnets", func(t *testing.T) {
		tok := f.token(ctx, t, 0)
		f.startAgent(ctx, t, 5, "join", "--name", "m6", "--foreground", tok)
		d := f.waitAllAlive(ctx, t, 60*time.Second)
		t.Logf("m6 admitted after the heal; all seven alive everywhere %v later (%v after the heal)", d.Round(10*time.Millisecond), time.Since(healedAt).Round(10*time.Millisecond))
		for i := range f.hosts {
			seen := map[string]string{}
			for _, m := range f.machines(ctx, t, i) {
				if other, dup := seen[m.Subnet]; dup {
					t.Errorf("%s: %s and %s share subnet %s", f.hosts[i].Name, other, m.Name, m.Subnet)
				}
				seen[m.Subnet] = m.Name
			}
			if len(seen) != 7 {
				t.Errorf("%s lists %d subnets, want 7: %v", f.hosts[i].Name, len(seen), seen)
			}
		}
		for _, m := range f.machines(ctx, t, 0) {
			if m.Name == "m6" && m.Subnet != "10.210.7.0/24" {
				t.Errorf("m6 got %s after the heal, want 10.210.7.0/24", m.Subnet)
			}
		}
	})
}

// TestMutualRemoval: with the network split m1 | m2 m3, m1 removes m2 and
// m2 removes m1. After the heal the two removals never meet: m3 applied
// m2's removal of m1, so it refuses m1's calls and gossip, which is how
// m1's removal of m2 would have reached it. So m3 keeps m2 and refuses
// m1, and m1 is alone (README, "Two machines that remove each other"; a
// machine holding both removals keeps both machines out, see
// trust.TestMembership).
func TestMutualRemoval(t *testing.T) {
	ctx := context.Background()
	f := form(ctx, t, 3, nil)
	f.waitAllAlive(ctx, t, 60*time.Second)
	s1, s2, s3 := hostState(t, f.hosts[0]), hostState(t, f.hosts[1]), hostState(t, f.hosts[2])
	split, err := f.lab.Partition(ctx, []*lab.Host{f.hosts[0]}, []*lab.Host{f.hosts[1], f.hosts[2]})
	if err != nil {
		t.Fatal(err)
	}
	for _, rm := range [][2]int{{0, 1}, {1, 0}} {
		if out, err := f.uncloud(ctx, t, rm[0], "machine", "rm", fmt.Sprintf("m%d", rm[1]+1)); err != nil {
			t.Fatalf("m%d removes m%d during the split: %v\n%s", rm[0]+1, rm[1]+1, err, out)
		}
	}
	if err := split.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	m3Key := trust.EncodeKey(ed25519.NewKeyFromSeed(s3.IdentitySeed).Public().(ed25519.PublicKey))
	m3API := netipJoin(s3.MeshAddress(), agent.MachineAPIPort)
	time.Sleep(10 * time.Second) // long enough for anything of m1's to arrive, were it let in
	byID := machineRecords(ctx, t, f, 2)
	if byID[s1.MachineID] != nil || byID[s2.MachineID] == nil {
		t.Fatalf("after the heal m3 lists m1: %v, m2: %v; want m2 only", byID[s1.MachineID] != nil, byID[s2.MachineID] != nil)
	}
	if res := rogueCallWithin(ctx, t, f.hosts[0], time.Second, m3API, m3Key, "GET", api.MachinePathKeyring, ""); res.Status == 200 {
		t.Fatal("m1 still reaches m3's machine API")
	}
	if res, err := f.hosts[1].Ping(ctx, s3.MeshAddress(), 1, 3*time.Second); err != nil || res.Received == 0 {
		t.Fatalf("m2 no longer reaches m3: %+v %v", res, err)
	}
}
