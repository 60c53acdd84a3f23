package crdt

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/internal/testkit"
	"github.com/uncloud-mesh/uncloud/record"
)

const killChildEnv = "CRDT_KILL_CHILD_DIR"

// TestKill9DuringBurst re-executes the test binary as a child that writes in
// a burst and prints every acknowledged key; the parent SIGKILLs it
// mid-burst, reopens the store, finds every acknowledged key, and the
// replica then converges with the rest of the network.
func TestKill9DuringBurst(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(t, dir)
		return
	}
	c := newTestCluster(t, 3)
	ctx := context.Background()
	mustPut(t, c.s("m1"), &record.Machine{ID: "m1", Name: "a"})
	c.waitConverged(5 * time.Second)
	c.stop("m3")
	dir := c.dirs["m3"]

	var acked []string
	for round, killAfter := range []int{300, 1500, 50} {
		cmd := testkit.BinaryCommand(os.Args[0], "-test.run=^TestKill9DuringBurst$", "-test.count=1")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir, fmt.Sprintf("CRDT_KILL_ROUND=%d", round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		for sc.Scan() {
			key, ok := strings.CutPrefix(sc.Text(), "ACK ")
			if !ok {
				continue
			}
			acked = append(acked, key)
			if n++; n == killAfter {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child was not killed by SIGKILL: %v", round, err)
		}
		t.Logf("round %d: killed after %d acknowledged writes", round, n)
	}

	back := c.start("m3")
	for _, k := range acked {
		if _, err := back.Get(ctx, k); err != nil {
			t.Fatalf("acknowledged %s lost after kill -9: %v", k, err)
		}
	}
	mustPut(t, back, &record.Machine{ID: "m3", Name: "c"})
	d := c.waitConverged(15 * time.Second)
	recs, _ := c.s("m1").List(ctx, "/containers/m3/")
	if len(recs) < len(acked) {
		t.Fatalf("m1 has %d of m3's %d acknowledged containers", len(recs), len(acked))
	}
	t.Logf("%d acknowledged writes survived 3 kills; converged, digest %s", len(acked), d[:12])
}

// killChild writes until killed, printing each key once Put returned.
func killChild(t *testing.T, dir string) {
	s, err := Open(context.Background(), Config{Dir: dir, Name: "m3", Log: testLogger(t)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	round := os.Getenv("CRDT_KILL_ROUND")
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		r := &record.Container{MachineID: "m3", ID: fmt.Sprintf("r%s-%06d", round, i), Name: strings.Repeat("x", i%200)}
		if err := s.Put(context.Background(), r.Key(), r); err != nil {
			fmt.Fprintln(os.Stderr, "child put:", err)
			os.Exit(4)
		}
		fmt.Fprintf(os.Stdout, "ACK %s\n", r.Key())
	}
	os.Exit(5) // never killed: the parent fails on the exit status
}
