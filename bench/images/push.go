package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
)

// way is how an image gets to the targets.
type way string

const (
	wayUncloud  way = "uncloud image push"
	wayLoad     way = "push --method load (save|load)"
	wayRegistry way = "docker-registry push+pull"
)

// push sends version v to every target one way, and measures it.
func (b *bench) push(ctx context.Context, w way, v int) (result, error) {
	var res result
	before := make([]int64, len(b.hosts))
	for i := 1; i < len(b.hosts); i++ {
		n, err := b.counters[i].Bytes(ctx)
		if err != nil {
			return res, err
		}
		before[i] = int64(n)
	}
	rss := make([]int64, len(b.agents))
	for i, p := range b.agents {
		rss[i] = resetPeak(p)
	}
	disk := newDiskWatch(b.hosts[1:])
	start := time.Now()
	var err error
	switch w {
	case wayUncloud, wayLoad:
		args := []string{"image", "push", imageName(v), "-m", "m2,m3,m4"}
		if w == wayLoad {
			args = append(args, "--method", "load")
		}
		var out string
		if out, err = b.uncloud(ctx, 0, args...); err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
	case wayRegistry:
		err = b.registryRoundTrip(ctx, v)
	}
	res.took = time.Since(start)
	res.targetDisk = disk.stop()
	if err != nil {
		return res, err
	}
	for i := 1; i < len(b.hosts); i++ {
		n, err := b.counters[i].Bytes(ctx)
		if err != nil {
			return res, err
		}
		res.perMachine = append(res.perMachine, int64(n)-before[i])
		if inc := peak(b.agents[i]) - rss[i]; inc > res.targetRSS {
			res.targetRSS = inc
		}
		if _, err := b.dockers[i].Client.ImageInspect(ctx, imageName(v)); err != nil {
			return res, fmt.Errorf("m%d lacks %s after the push: %w", i+1, imageName(v), err)
		}
	}
	res.sourceRSS = peak(b.agents[0]) - rss[0]
	return res, nil
}

// registryRoundTrip is what a user with a registry does: tag and push on
// the source, pull (and name) on every target at once.
func (b *bench) registryRoundTrip(ctx context.Context, v int) error {
	remote := registryAddr() + "/" + imageName(v)
	src := b.dockers[0].Client
	if err := src.ImageTag(ctx, imageName(v), remote); err != nil {
		return err
	}
	// The registry was just (re)started: its first answer may take a moment.
	var err error
	for deadline := time.Now().Add(15 * time.Second); ; {
		if err = dockerStream(src.ImagePush(ctx, remote, image.PushOptions{RegistryAuth: registryAuth})); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("docker push %s: %w", remote, err)
	}
	return parallel(len(b.hosts)-1, func(i int) error {
		c := b.dockers[i+1].Client
		if err := dockerStream(c.ImagePull(ctx, remote, image.PullOptions{RegistryAuth: registryAuth})); err != nil {
			return fmt.Errorf("docker pull %s on m%d: %w", remote, i+2, err)
		}
		return c.ImageTag(ctx, remote, imageName(v))
	})
}

// resetPeak resets the process's peak RSS (VmHWM) to its current RSS and
// returns that.
func resetPeak(p *lab.Process) int64 {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.Pid()), []byte("5"), 0)
	n, _ := p.RSS()
	return n
}

func peak(p *lab.Process) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// diskWatch samples the size of the targets' registry directories and
// keeps the largest.
type diskWatch struct {
	max  atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func newDiskWatch(hosts []*lab.Host) *diskWatch {
	w := &diskWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, h := range hosts {
				if n := dirSize(filepath.Join(h.Dir, "lib", "registry")); n > w.max.Load() {
					w.max.Store(n)
				}
			}
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *diskWatch) stop() int64 {
	close(w.done)
	w.wg.Wait()
	return w.max.Load()
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
