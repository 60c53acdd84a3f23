package e2e

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// transferSize is the size of each bulk transfer (the issue asks for 100 MB).
const transferSize = 100 << 20

// TestMesh brings up two hosts in each combination of modes and checks, in
// both directions, a ping-equivalent and a 100 MB TCP transfer whose
// sha256 must match on both ends.
func TestMesh(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b mode
	}{
		{"kernel-kernel", kernel, kernel},
		{"netstack-netstack", netstack, netstack},
		{"kernel-netstack", kernel, netstack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := lab.Start(t)
			nodes := startMesh(t, l, tc.a, tc.b)
			ctx := t.Context()
			for _, dir := range [][2]node{{nodes[0], nodes[1]}, {nodes[1], nodes[0]}} {
				from, to := dir[0], dir[1]
				msg, ok := reach(ctx, from, to, 20*time.Second)
				if !ok {
					t.Fatalf("%s (%s) → %s (%s): %s", from.host.Name, from.mode, to.host.Name, to.mode, msg)
				}
				t.Logf("%s → %s: %s", from.host.Name, to.host.Name, msg)
			}
			for i, dir := range [][2]node{{nodes[0], nodes[1]}, {nodes[1], nodes[0]}} {
				transfer(t, dir[0], dir[1], transferSize, uint64(i+1))
			}
			for _, n := range nodes {
				checkNoSecretInLog(t, n)
			}
		})
	}
}

// transfer sends size bytes from one node to another across the mesh and
// checks that size and sha256 agree on both ends.
func transfer(t *testing.T, from, to node, size int64, seed uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sink, err := to.host.StartSink(ctx, fmtf("sink%d", seed), to.serviceAddr(transferPort), 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := from.host.Send(ctx, to.meshAddr(transferPort), size, seed, from.dial(3*time.Minute))
	if err != nil {
		t.Fatalf("%s → %s: %v", from.host.Name, to.host.Name, err)
	}
	got, err := sink.Result(ctx)
	if err != nil {
		t.Fatalf("%s → %s: %v", from.host.Name, to.host.Name, err)
	}
	if sent.Bytes != size || got.Bytes != size || got.SHA256 != sent.SHA256 {
		t.Fatalf("%s → %s: sent %d bytes sha256 %s, received %d bytes sha256 %s",
			from.host.Name, to.host.Name, sent.Bytes, sent.SHA256, got.Bytes, got.SHA256)
	}
	// A kernel-mode receiver sees the sender's mesh address: the bytes came
	// through the tunnel, not some other path. (A netstack receiver sees
	// the agent's loopback forwarder.)
	if to.mode == kernel && !strings.HasPrefix(got.Peer, from.agent.MeshAddr().String()+":") {
		t.Errorf("%s → %s: receiver saw peer %s, want %s", from.host.Name, to.host.Name, got.Peer, from.agent.MeshAddr())
	}
	t.Logf("%s (%s) → %s (%s): %d MB, sha256 %.12s…, %.0f Mbit/s",
		from.host.Name, from.mode, to.host.Name, to.mode, size>>20, got.SHA256, got.Mbps())
}

// checkNoSecretInLog fails the test if the agent's log (at debug level)
// holds its private key, in the config's base64 or in the hex form
// wireguard-go's UAPI uses.
func checkNoSecretInLog(t *testing.T, n node) {
	t.Helper()
	key := n.agent.Config.PrivateKey
	log := n.agent.Proc.Log()
	if strings.Contains(log, key.String()) || strings.Contains(log, hex.EncodeToString(key[:])) {
		t.Errorf("%s: the agent's log holds its private key", n.host.Name)
	}
}
