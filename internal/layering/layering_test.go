package layering

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/uncloud-mesh/uncloud/"

// layers ranks every package of the module (path without the module
// prefix; "x/..." covers x's subpackages too). A package may import only
// packages of a strictly lower rank, so two packages of one rank never
// import each other: that is how "runtime does not write the state"
// (runtime and crdt share rank 1) is enforced. A new package must be
// added here, which makes its place in the layering a decision.
var layers = map[string]int{
	// Vocabulary: the address plan, the shared records, test helpers.
	"meshaddr":                     0,
	"record":                       0,
	"sealing":                      0, // machine sealing keys and the sealed-blob format (stdlib only)
	"internal/testkit":             0,
	"internal/testkit/sshd":        0, // a real OpenSSH sshd for tests (x/crypto/ssh keys only)
	"internal/atomicfile":          0, // crash-safe file writes (stdlib only)
	"internal/layering":            0,
	"runtime/testimage/echoserver": 0,
	"gossip/gossiptest":            0, // test doubles know only the interfaces they satisfy

	// Engines that know nothing of each other.
	"tun":     1,
	"gossip":  1,
	"crdt":    1,
	"runtime": 1,
	"oci":     1, // the loopback image registry and its blob store (image push)

	// Test helpers that open a real engine.
	"crdt/crdttest": 2,
	"trust":         2, // decides who may write what; the store calls it through crdt.Verifier

	// Parts built on an engine.
	"nat":               2,
	"resolver":          2,
	"ingress":           2,
	"runtime/testimage": 2,

	// The APIs' wire types and clients.
	"api": 3,

	// The daemon: the composition root and its parts.
	"agent":          4,
	"agent/...":      4,
	"agent/static":   4,
	"agent/hostnet":  4, // exposed ports, the proxies into the mesh, their settings file
	"agent/rootless": 4, // finding a rootless Docker, what it lacks, entering its namespaces
	"agent/metrics":  4, // the agent's /metrics: collectors over the agent's parts, the listener's address rule
	"agent/ui":       4, // the web dashboard: pages, live events, the machine view, the login gate of uncloud ui

	// The lab that runs real binaries, then what sits on top of everything.
	"e2e/lab":            5,
	"cmd/...":            6,
	"e2e":                6,
	"e2e/cmd/...":        6,
	"bench/internal/...": 6, // the benchmarks' shared lab setup
	"bench/...":          7,
	"scripts/...":        7, // build tools (scripts/sizes)
}

// rank finds a package's layer: an exact entry, else the nearest
// "parent/..." entry.
func rank(pkg string) (int, bool) {
	if r, ok := layers[pkg]; ok {
		return r, true
	}
	for p := pkg; p != ""; {
		i := strings.LastIndex(p, "/")
		if i < 0 {
			break
		}
		p = p[:i]
		if r, ok := layers[p+"/..."]; ok {
			return r, true
		}
	}
	return 0, false
}

// sameTree: a package and its own subpackages are one unit
// (runtime/testimage builds on runtime; Go's ban on import cycles keeps
// the direction).
func sameTree(a, b string) bool {
	return strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

type listed struct {
	ImportPath string
	Imports    []string
}

func TestLayering(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var problems []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listed
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("reading go list's output: %v", err)
		}
		problems = append(problems, check(p)...)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// check returns what is wrong with one package's imports.
func check(p listed) []string {
	from := strings.TrimPrefix(p.ImportPath, module)
	fromRank, ok := rank(from)
	if !ok {
		return []string{fmt.Sprintf("package %s has no layer: add it to the table in internal/layering", from)}
	}
	var problems []string
	for _, imp := range p.Imports {
		if !strings.HasPrefix(imp, module) {
			continue
		}
		to := strings.TrimPrefix(imp, module)
		toRank, ok := rank(to)
		if !ok || sameTree(from, to) {
			continue // reported as its own package, or one unit
		}
		if toRank >= fromRank {
			problems = append(problems, fmt.Sprintf("%s (layer %d) imports %s (layer %d): a package imports only lower layers", from, fromRank, to, toRank))
		}
	}
	return problems
}

func TestCheckCatchesUpwardImports(t *testing.T) {
	tests := []struct {
		from, to string
		bad      bool
	}{
		{"runtime", "crdt", true},   // runtime must not write the state
		{"crdt", "agent", true},     // nothing below imports the daemon
		{"resolver", "crdt", false}, // a part reads its engine
		{"agent/membership", "api", false},
		{"cmd/uncloud", "agent", false},
		{"api", "agent", true},
		{"runtime/testimage", "runtime", false}, // its own tree
		{"tun", "nat", true},
	}
	for _, tt := range tests {
		got := check(listed{ImportPath: module + tt.from, Imports: []string{module + tt.to, "fmt"}})
		if (len(got) > 0) != tt.bad {
			t.Errorf("%s importing %s: problems %q, want bad=%v", tt.from, tt.to, got, tt.bad)
		}
	}
	if got := check(listed{ImportPath: module + "newthing"}); len(got) != 1 {
		t.Errorf("a package missing from the table: problems %q, want one", got)
	}
}
