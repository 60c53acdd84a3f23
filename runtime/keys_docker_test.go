package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestDockerKeys makes a container with Docker's published ports and the
// basic keys, and reads back what Docker made of them.
func TestDockerKeys(t *testing.T) {
	rt := newTestRuntime(t, "keys")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A bind mount of a host path that does not exist: Docker makes it,
	// as `docker run -v` does.
	missing := filepath.Join(t.TempDir(), "made-by-docker")
	spec := ContainerSpec{Service: "web", Image: testimage.Tag, Env: []string{"PORT=8080"},
		Ports:   []string{"127.0.0.1:18081:8080", "127.0.0.1:18090-18091:9090-9091/udp", "8080"},
		Volumes: []string{"tmpfs:/t", missing + ":/m:ro"}, Tmpfs: []string{"/scratch:size=1m"},
		User: "65534", WorkingDir: "/tmp", Labels: map[string]string{"team": "a", "uncloud.x": "no"},
		Init: true, CapDrop: []string{"ALL"}, CapAdd: []string{"NET_BIND_SERVICE"}, StopSignal: "SIGINT", StopGracePeriod: "3s",
		Ulimits: []string{"nofile=1024:2048"}, LogDriver: "json-file", LogOptions: map[string]string{"max-size": "1m"},
		CPUs: 0.5, Memory: 64 << 20, ReserveMemory: 32 << 20}
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), `label "uncloud.x"`) {
		t.Fatalf("a label under uncloud.: %v", err)
	}
	delete(spec.Labels, "uncloud.x")
	c, err := rt.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rt.InspectRaw(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	hc, cfg := raw.HostConfig, raw.Config
	if b := hc.PortBindings["8080/tcp"]; len(b) != 1 || b[0].HostIP != "127.0.0.1" || b[0].HostPort != "18081" {
		t.Errorf("8080/tcp bound to %+v", b)
	}
	if b := hc.PortBindings["9091/udp"]; len(b) != 1 || b[0].HostPort != "18091" {
		t.Errorf("9091/udp bound to %+v", b)
	}
	if cfg.User != "65534" || cfg.WorkingDir != "/tmp" || cfg.Labels["team"] != "a" || cfg.Labels[LabelService] != "web" ||
		cfg.StopSignal != "SIGINT" || cfg.StopTimeout == nil || *cfg.StopTimeout != 3 {
		t.Errorf("config: user %q workdir %q labels %v stop %q %v", cfg.User, cfg.WorkingDir, cfg.Labels, cfg.StopSignal, cfg.StopTimeout)
	}
	if hc.Init == nil || !*hc.Init || len(hc.CapDrop) != 1 || len(hc.CapAdd) != 1 || len(hc.Ulimits) != 1 || hc.Ulimits[0].Hard != 2048 {
		t.Errorf("host config: init %v caps %v %v ulimits %+v", hc.Init, hc.CapAdd, hc.CapDrop, hc.Ulimits)
	}
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != "1m" {
		t.Errorf("logging %+v", hc.LogConfig)
	}
	if hc.NanoCPUs != 5e8 || hc.Memory != 64<<20 || hc.MemoryReservation != 32<<20 {
		t.Errorf("resources: cpus %d memory %d reservation %d", hc.NanoCPUs, hc.Memory, hc.MemoryReservation)
	}
	if hc.Tmpfs["/scratch"] != "size=1m" || len(hc.Mounts) != 1 || hc.Mounts[0].Type != "tmpfs" || hc.Mounts[0].Target != "/t" {
		t.Errorf("tmpfs %v mounts %+v", hc.Tmpfs, hc.Mounts)
	}
	if len(hc.DNSSearch) != 1 || hc.DNSSearch[0] != "internal" || len(hc.DNSOptions) != 1 || hc.DNSOptions[0] != "ndots:1" {
		t.Errorf("DNS search %q options %q, want internal and ndots:1 (a bare name is tried under internal first)", hc.DNSSearch, hc.DNSOptions)
	}
	if len(hc.Binds) != 1 || hc.Binds[0] != missing+":/m:ro" {
		t.Errorf("binds %q, want %s:/m:ro", hc.Binds, missing)
	}
	if st, err := os.Stat(missing); err != nil || !st.IsDir() {
		t.Errorf("the bind mount's missing host path was not made: %v", err)
	}
	// The published port answers on the host address it was bound to.
	var body string
	eventually(t, "published port answers", 30*time.Second, func() error {
		body, err = httpGet(ctx, "http://127.0.0.1:18081/")
		return err
	})
	if !strings.Contains(body, "host="+c.Name) {
		t.Errorf("answer %q", body)
	}
	// A second container wanting the same host port is refused, and says so.
	spec.Ports = []string{"18081:8080"}
	if _, err := rt.Create(ctx, spec); !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), "m-keys") {
		t.Errorf("a second container on host port 18081: %v, want ErrPortTaken naming the machine", err)
	}
	if cpus, mem, arch, err := rt.Capacity(ctx); err != nil || cpus < 1 || mem < 1<<20 || arch == "" {
		t.Errorf("capacity %d %d %q %v", cpus, mem, arch, err)
	}
	// Removal honours the stop signal and grace period (the server exits
	// on SIGINT at once, so this is quick).
	start := time.Now()
	if err := rt.Remove(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("removal took %v", d)
	}
}
