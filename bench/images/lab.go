package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/uncloud-mesh/uncloud/bench/internal/dockerlab"
	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/meshaddr"
)

// bench is the lab: host 0 is the source (its Docker has the images, the
// docker-registry runs there), the others are targets.
type bench struct {
	lab      *lab.Lab
	tmp      string
	hosts    []*lab.Host
	dockers  []*lab.Docker
	agents   []*lab.Process
	registry *lab.Process
	counters []*lab.Counter // source → target i (index 0 unused)
	round    int
}

// registryAddr is where the docker-registry peer listens: the source's
// mesh address, so its traffic crosses the mesh like the others'.
func registryAddr() string { return meshaddr.Subnet(1).MachineAddr().String() + ":5000" }

func (b *bench) uncloud(ctx context.Context, i int, args ...string) (string, error) {
	return b.hosts[i].Run(ctx, b.lab.Uncloud, args...)
}

func (b *bench) close() {
	for _, d := range b.dockers {
		if d != nil {
			d.Close()
		}
	}
}

// setup starts n hosts with their engines (which may use the peer
// registry without TLS), forms the network and starts the counters.
func (b *bench) setup(ctx context.Context, n int) error {
	var err error
	if b.hosts, err = b.lab.AddHosts(ctx, n); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "starting %d Docker Engines…\n", n)
	b.dockers = make([]*lab.Docker, n)
	if err := parallel(n, func(i int) error {
		d, err := b.hosts[i].StartDocker(ctx)
		if err != nil {
			return err
		}
		b.dockers[i] = d
		conf := fmt.Sprintf(`{"insecure-registries": [%q]}`+"\n", registryAddr())
		if err := os.WriteFile(filepath.Join(d.Dir, "daemon.json"), []byte(conf), 0o600); err != nil {
			return err
		}
		d.Stop()
		return d.Start(ctx)
	}); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "forming the network…")
	if err := b.form(ctx); err != nil {
		return err
	}
	b.counters = make([]*lab.Counter, n)
	for i := 1; i < n; i++ {
		if b.counters[i], err = b.hosts[0].CountEgress(ctx, "ip daddr "+b.hosts[i].Addr.String()); err != nil {
			return err
		}
	}
	return nil
}

// form forms the network (dockerlab.Form) with the engines as set up.
func (b *bench) form(ctx context.Context) error {
	var err error
	b.agents, err = dockerlab.Form(ctx, b.lab, b.hosts, b.dockers)
	return err
}

// reset makes a cold start: no image of the benchmark on the targets, no
// blob in any registry (the source's agent's, the docker-registry's, which
// starts afresh), no name of the peer registry on the source.
func (b *bench) reset(ctx context.Context) error {
	b.round++
	for i, d := range b.dockers {
		list, err := d.Client.ImageList(ctx, image.ListOptions{All: true})
		if err != nil {
			return err
		}
		for _, img := range list {
			for _, name := range append(img.RepoTags, img.RepoDigests...) {
				ours := strings.HasPrefix(name, registryAddr()+"/") || strings.HasPrefix(name, "127.0.0.1:")
				if i > 0 && strings.HasPrefix(name, "bench/") {
					ours = true
				}
				if ours {
					// (Removing a name may have removed the image and its
					// other names with it.)
					if _, err := d.Client.ImageRemove(ctx, name, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !strings.Contains(err.Error(), "No such image") {
						return fmt.Errorf("remove %s on m%d: %w", name, i+1, err)
					}
				}
			}
		}
	}
	for _, h := range b.hosts {
		for _, area := range []string{"pushed", "fetched"} {
			dir := filepath.Join(h.Dir, "lib", "registry", area, "sha256")
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	if b.registry != nil {
		b.registry.Stop(5 * time.Second)
	}
	storage := filepath.Join(b.tmp, fmt.Sprintf("registry%d", b.round))
	conf := filepath.Join(b.tmp, fmt.Sprintf("registry%d.yml", b.round))
	yml := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: 0.0.0.0:5000\n", storage)
	if err := os.WriteFile(conf, []byte(yml), 0o600); err != nil {
		return err
	}
	p, err := b.hosts[0].Start("docker-registry", "docker-registry", "serve", conf)
	if err != nil {
		return err
	}
	b.registry = p
	return nil
}

// registryAuth is the X-Registry-Auth of a registry without accounts.
var registryAuth = base64.URLEncoding.EncodeToString([]byte("{}"))

// dockerStream reads a Docker push or pull answer to its end; an error
// message in it is the error.
func dockerStream(rc io.ReadCloser, err error) error {
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if m.Error != "" {
			return fmt.Errorf("%s", m.Error)
		}
	}
}

// topLayerSize is the compressed size of the version 2 top layer: the
// blob that the source's agent's store got when version 2 was pushed
// after version 1 (the only layer, the rest being config, < 64 KiB).
func (b *bench) topLayerSize(ctx context.Context) (int64, error) {
	dir := filepath.Join(b.hosts[0].Dir, "lib", "registry", "pushed", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var newest os.FileInfo
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || info.Size() < 64<<10 || info.Size() > 2*mib {
			continue
		}
		if newest == nil || info.ModTime().After(newest.ModTime()) {
			newest = info
		}
	}
	if newest == nil {
		return 0, fmt.Errorf("no top layer blob in %s", dir)
	}
	return newest.Size(), nil
}
