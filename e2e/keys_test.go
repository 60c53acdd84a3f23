package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

// TestComposeKeys: Docker's meaning of ports, named volumes, memory
// reservations and label constraints on three machines with their own
// dockerds (issue 15).
func TestComposeKeys(t *testing.T) {
	ctx := context.Background()
	c := newContainerLab(ctx, t, withDocker, withDocker, withDocker)
	if out, err := c.uncloud(ctx, t, 0, "image", "push", testimage.Tag); err != nil {
		t.Fatalf("image push: %v\n%s", err, out)
	}
	fromInternet := func(url string) (string, error) { return c.fromInternet(ctx, url) }
	where := func(t *testing.T, service string) map[string][]string {
		t.Helper()
		out := map[string][]string{}
		for _, ci := range c.ps(ctx, t, 0) {
			if ci.Service == service {
				out[ci.Machine] = append(out[ci.Machine], ci.Name)
			}
		}
		return out
	}
	host := func(name string) int { // m1 -> 0
		var i int
		fmt.Sscanf(name, "m%d", &i)
		return i - 1
	}

	if !t.Run("-p 8081:8080 answers on the host address of each machine running a replica", func(t *testing.T) {
		var res api.ServiceResult
		if err := c.ucJSON(ctx, t, 0, &res, "run", "--name", "web", "--replicas", "2", "-p", "8081:8080", "-o", "json", testimage.Tag); err != nil {
			t.Fatal(err)
		}
		on := map[string]string{}
		for _, r := range res.Containers {
			if r.Error != "" {
				t.Fatalf("%s: %s", r.Machine, r.Error)
			}
			on[r.Machine] = r.Name
		}
		if len(on) != 2 {
			t.Fatalf("2 replicas on %v: one machine got both", on)
		}
		for m, name := range on {
			addr := c.hosts[host(m)].PublicAddr
			eventuallyE2E(t, "web answers on "+m+"'s host address", 30*time.Second, func() error {
				body, err := fromInternet(fmt.Sprintf("http://%s:8081/", addr))
				if err != nil {
					return fmt.Errorf("%v: %s", err, body)
				}
				if !strings.Contains(body, "host="+name) {
					return fmt.Errorf("%s:8081 answered %q, want the replica %s there", addr, body, name)
				}
				return nil
			})
			t.Logf("%s (%s:8081) answered from %s", m, addr, name)
		}
		for i, h := range c.hosts {
			if _, ok := on[fmt.Sprintf("m%d", i+1)]; !ok {
				if body, err := fromInternet(fmt.Sprintf("http://%s:8081/", h.PublicAddr)); err == nil {
					t.Errorf("m%d runs no replica but answered on 8081: %q", i+1, body)
				}
			}
		}
	}) {
		return
	}

	if !t.Run("a collision is refused before anything starts, naming the port and the machine", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "run", "--name", "web2", "--replicas", "2", "-p", "8081:9000", testimage.Tag)
		if err == nil || !strings.Contains(err.Error()+out, "host port 8081/tcp is taken there by service web") {
			t.Fatalf("a second service on host port 8081 with 2 replicas (one machine left): %v\n%s", err, out)
		}
		t.Logf("refused: %v", err)
		if got := where(t, "web2"); len(got) != 0 {
			t.Errorf("web2 has containers after a refused run: %v", got)
		}
		if out, err := c.uncloud(ctx, t, 0, "inspect", "web2"); err == nil {
			t.Errorf("web2 recorded after a refused run:\n%s", out)
		}
		out, err = c.uncloud(ctx, t, 1, "scale", "web", "4")
		if err == nil || !strings.Contains(err.Error()+out, "bound there by another replica of web") {
			t.Errorf("scale web to 4 on 3 machines: %v\n%s", err, out)
		}
		if n := len(c.running(ctx, t, 0, "web", 2)); n != 2 {
			t.Errorf("web has %d containers after a refused scale", n)
		}
	}) {
		return
	}

	if !t.Run("a named volume keeps its service on its machine across scale and deploy", func(t *testing.T) {
		if out, err := c.uncloud(ctx, t, 0, "run", "--name", "db", "-v", "dbdata:/data", "-m", "m2", testimage.Tag); err != nil {
			t.Fatalf("run db: %v\n%s", err, out)
		}
		if out, err := c.uncloud(ctx, t, 2, "scale", "db", "3"); err != nil {
			t.Fatalf("scale db 3: %v\n%s", err, out)
		}
		// The deploy below is given to m1, which counts what its copy of
		// the state holds; m3's scale reaches it by gossip (AP, §6).
		c.running(ctx, t, 0, "db", 3)
		if got := where(t, "db"); len(got) != 1 || len(got["m2"]) != 3 {
			t.Errorf("db after scale to 3: %v, want all on m2 (the volume is there)", got)
		}
		if _, err := c.engines[1].Client.VolumeInspect(ctx, "dbdata"); err != nil {
			t.Errorf("volume dbdata on m2: %v", err)
		}
		for _, i := range []int{0, 2} {
			if _, err := c.engines[i].Client.VolumeInspect(ctx, "dbdata"); err == nil {
				t.Errorf("volume dbdata made on m%d too", i+1)
			}
		}
		dir := filepath.Join(c.hosts[0].Dir, "keys")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "compose.yaml")
		body := fmt.Sprintf("services:\n  db:\n    image: %s\n    environment:\n      VERSION: \"2\"\n    volumes: [\"dbdata:/data\"]\n    deploy:\n      replicas: 4\nvolumes:\n  dbdata: {}\n", testimage.Tag)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := c.uncloud(ctx, t, 0, "deploy", "-p", "default", "-f", path)
		if err != nil {
			t.Fatalf("deploy: %v\n%s", err, out)
		}
		c.running(ctx, t, 0, "db", 4)
		if got := where(t, "db"); len(got) != 1 || len(got["m2"]) != 4 {
			t.Errorf("db after a deploy with 4 replicas and a new environment: %v, want all on m2", got)
		}
		// Down to none and up again: the service record remembers.
		if out, err := c.uncloud(ctx, t, 0, "scale", "db", "0"); err != nil {
			t.Fatalf("scale db 0: %v\n%s", err, out)
		}
		if out, err := c.uncloud(ctx, t, 0, "scale", "db", "1"); err != nil {
			t.Fatalf("scale db 1: %v\n%s", err, out)
		}
		if got := where(t, "db"); len(got["m2"]) != 1 || len(got) != 1 {
			t.Errorf("db after scale 0 then 1: %v, want m2", got)
		}
		var vs []api.VolumeInfo
		if err := c.ucJSON(ctx, t, 2, &vs, "volume", "ls", "-o", "json"); err != nil {
			t.Fatal(err)
		}
		if len(vs) != 1 || vs[0].Name != "dbdata" || vs[0].Machine != "m2" || vs[0].Driver != "local" ||
			len(vs[0].Services) != 1 || vs[0].Services[0] != "db" || vs[0].Containers != 1 {
			t.Errorf("volume ls: %+v, want dbdata on m2 used by db's one container", vs)
		}
		out, _ = c.uncloud(ctx, t, 2, "volume", "ls")
		t.Logf("volume ls:\n%s", out)
	}) {
		return
	}

	if !t.Run("a memory reservation that fits nowhere is refused with the reason", func(t *testing.T) {
		out, err := c.uncloud(ctx, t, 0, "run", "--name", "big", "--reserve-memory", "100t", "--memory", "200t", testimage.Tag)
		text := ""
		if err != nil {
			text = err.Error()
		}
		text += out
		if err == nil || !strings.Contains(text, "fits on no machine") || !strings.Contains(text, "m1: memory: 100TiB reserved") ||
			!strings.Contains(text, "m3: memory") {
			t.Fatalf("run big: %v\n%s", err, out)
		}
		t.Logf("refused: %s", strings.TrimSpace(text))
		if got := where(t, "big"); len(got) != 0 {
			t.Errorf("big has containers: %v", got)
		}
		// One that fits runs, with Docker's limit set.
		if out, err := c.uncloud(ctx, t, 0, "run", "--name", "small", "--reserve-memory", "16m", "--memory", "64m", "-m", "m3", testimage.Tag); err != nil {
			t.Fatalf("run small: %v\n%s", err, out)
		}
		ci := c.running(ctx, t, 0, "small", 1)[0]
		raw, err := c.engines[2].Client.ContainerInspect(ctx, ci.ID)
		if err != nil || raw.HostConfig.Memory != 64<<20 || raw.HostConfig.MemoryReservation != 16<<20 {
			t.Errorf("small's Docker limits: %v %+v", err, raw.HostConfig)
		}
	}) {
		return
	}

	t.Run("a label constraint places on the labelled machine", func(t *testing.T) {
		// m1 asks m3 to label itself: only m3 signs its record.
		out, err := c.uncloud(ctx, t, 0, "machine", "label", "add", "m3", "disk=ssd")
		if err != nil || !strings.Contains(out, "disk=ssd") {
			t.Fatalf("label m3: %v\n%s", err, out)
		}
		eventuallyE2E(t, "m2 sees m3's label", 30*time.Second, func() error {
			var ms []api.MachineInfo
			if err := c.ucJSON(ctx, t, 1, &ms, "machine", "ls", "-o", "json"); err != nil {
				return err
			}
			for _, m := range ms {
				if m.Name == "m3" && m.Labels["disk"] == "ssd" {
					return nil
				}
			}
			return fmt.Errorf("machines %+v", ms)
		})
		if out, err := c.uncloud(ctx, t, 1, "run", "--name", "fast", "--replicas", "2", "--constraint", "node.labels.disk==ssd", testimage.Tag); err != nil {
			t.Fatalf("run fast: %v\n%s", err, out)
		}
		if got := where(t, "fast"); len(got) != 1 || len(got["m3"]) != 2 {
			t.Errorf("fast on %v, want both on m3", got)
		}
		out, err = c.uncloud(ctx, t, 0, "run", "--name", "nowhere", "--constraint", "node.labels.disk==nvme", testimage.Tag)
		if err == nil || !strings.Contains(err.Error()+out, "m3: does not meet node.labels.disk==nvme") {
			t.Errorf("a constraint nothing meets: %v\n%s", err, out)
		}
		if out, err := c.uncloud(ctx, t, 0, "machine", "label", "rm", "m3", "disk"); err != nil || strings.Contains(out, "disk") {
			t.Errorf("label rm: %v\n%s", err, out)
		}
	})
}
