// Command images measures `uncloud image push` on a lab of machines
// (network namespaces), each with its own Docker Engine, against the two
// ways a user would move an image otherwise, in the same run:
//
//   - uncloud's push (only the layers a machine lacks, through the agents'
//     loopback registries);
//   - `uncloud image push --method load` (a whole `docker save` to each
//     machine's `docker load`: what uncloud did before);
//   - `docker push` to a docker-registry (Debian's, distribution 2.8) on the
//     source machine, then `docker pull` on every target, over the mesh.
//
// The image (about 200 MB of random bytes in four layers, plus a 1 MB top
// layer) and its second version (only the top layer differs) are built by
// the benchmark. Each way pushes version 1, then version 2, to three
// machines from a cold start (no layer of the image on the targets, no blob
// in any registry). It reports wall time, bytes on the wire from the source
// to each machine (WireGuard packets, headers included, nft counters), the
// agents' peak memory increase, and the disk the registry used on a target.
//
// Run as root from the repository root (it builds the binary):
//
//	go run ./bench/images [-rounds 2] [-layer-mib 50]
//	go run ./bench/images -quick     # 10 MiB layers, 1 round
//
// It prints a table and a one-line summary of ratios.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/e2e/lab"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

const mib = 1 << 20

func main() {
	rounds := flag.Int("rounds", 2, "rounds over every way (median reported)")
	layerMiB := flag.Int("layer-mib", 50, "size of each of the four base layers")
	quick := flag.Bool("quick", false, "10 MiB base layers, 1 round")
	flag.Parse()
	if *quick {
		*rounds, *layerMiB = 1, 10
	}
	if err := run(*rounds, *layerMiB); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// result is one push of one version one way.
type result struct {
	took       time.Duration
	perMachine []int64 // bytes on the wire from the source to each target
	targetRSS  int64   // largest peak RSS increase of a target's agent
	sourceRSS  int64   // peak RSS increase of the source's agent
	targetDisk int64   // largest peak of a target's registry directory
}

func (r result) meanBytes() int64 {
	var n int64
	for _, b := range r.perMachine {
		n += b
	}
	return n / int64(max(1, len(r.perMachine)))
}

func run(rounds, layerMiB int) error {
	ctx := context.Background()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		return fmt.Errorf("no docker-registry (apt-get install docker-registry): %w", err)
	}
	tmp, err := os.MkdirTemp("", "uncloud-bench-images")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintln(os.Stderr, "building uncloud…")
	bin := filepath.Join(tmp, "uncloud")
	build := exec.Command("go", "build", "-o", bin, "./cmd/uncloud")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build uncloud: %w: %s", err, out)
	}
	l, err := lab.New(ctx, lab.Options{Uncloud: bin})
	if err != nil {
		return err
	}
	defer l.Close()
	b := &bench{lab: l, tmp: tmp}
	defer b.close()
	if err := b.setup(ctx, 4); err != nil {
		return err
	}
	base := make([]testimage.Layer, 4)
	for i := range base {
		base[i] = testimage.Layer{Name: fmt.Sprintf("base%d", i+1), Size: layerMiB * mib, Seed: uint64(i + 1)}
	}
	fmt.Fprintf(os.Stderr, "building the image (%d MiB) and its second version…\n", 4*layerMiB+1)
	versions := [][]testimage.Layer{
		append(append([]testimage.Layer{}, base...), testimage.Layer{Name: "top", Size: mib, Seed: 100}),
		append(append([]testimage.Layer{}, base...), testimage.Layer{Name: "top", Size: mib, Seed: 101}),
	}
	for v, layers := range versions {
		if _, err := testimage.LoadLayered(ctx, b.dockers[0].Client, imageName(v), "amd64", layers); err != nil {
			return err
		}
	}
	ways := []way{wayUncloud, wayLoad, wayRegistry}
	results := map[way][2][]result{}
	var layer int64 // the changed layer's compressed size
	for r := 0; r < rounds; r++ {
		for _, w := range ways {
			if err := b.reset(ctx); err != nil {
				return err
			}
			var got [2][]result
			if prev, ok := results[w]; ok {
				got = prev
			}
			for v := range versions {
				fmt.Fprintf(os.Stderr, "round %d: %s, version %d…\n", r+1, w, v+1)
				res, err := b.push(ctx, w, v)
				if err != nil {
					return fmt.Errorf("%s, version %d: %w", w, v+1, err)
				}
				fmt.Fprintf(os.Stderr, "  %v, %.2f MiB per machine\n", res.took.Round(time.Millisecond), float64(res.meanBytes())/mib)
				got[v] = append(got[v], res)
				if w == wayUncloud && v == 1 && layer == 0 {
					if layer, err = b.topLayerSize(ctx); err != nil {
						return err
					}
				}
			}
			results[w] = got
		}
	}
	report(results, ways, layer, layerMiB, rounds)
	return nil
}

func imageName(v int) string { return fmt.Sprintf("bench/app:%d", v+1) }

// report prints the table and the summary.
func report(results map[way][2][]result, ways []way, layer int64, layerMiB, rounds int) {
	load, _ := os.ReadFile("/proc/loadavg")
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "way\tversion\twall time\tMiB on the wire per machine\tpeak RSS +, target agent\tpeak RSS +, source agent\tpeak registry disk, target\n")
	med := map[way][2]result{}
	for _, wy := range ways {
		var m [2]result
		for v := range 2 {
			m[v] = medianResult(results[wy][v])
			fmt.Fprintf(w, "%s\tv%d (%s)\t%v\t%.2f\t%s\t%s\t%s\n", wy, v+1, versionWords(v, layerMiB), m[v].took.Round(time.Millisecond),
				float64(m[v].meanBytes())/mib, mibOrNA(m[v].targetRSS, wy != wayRegistry), mibOrNA(m[v].sourceRSS, wy != wayRegistry),
				mibOrNA(m[v].targetDisk, wy == wayUncloud))
		}
		med[wy] = m
	}
	w.Flush()
	u, s, r := med[wayUncloud][1], med[wayLoad][1], med[wayRegistry][1]
	fmt.Printf("\nchanged layer: %.3f MiB compressed; medians of %d rounds; 3 target machines\n", float64(layer)/mib, rounds)
	fmt.Printf("summary: v2 per machine = %.2f× the changed layer (target ≤ 1.2); v2 save|load / uncloud = %.1f× (target ≥ 10); v2 uncloud / registry round trip = %.2f (target ≤ 1); v1 uncloud / registry = %.2f; load average %s",
		float64(u.meanBytes())/float64(layer), float64(s.took)/float64(u.took), float64(u.took)/float64(r.took),
		float64(med[wayUncloud][0].took)/float64(med[wayRegistry][0].took), load)
}

func versionWords(v, layerMiB int) string {
	if v == 0 {
		return fmt.Sprintf("%d MiB, cold", 4*layerMiB+1)
	}
	return "1 MiB top layer new"
}

func mibOrNA(n int64, known bool) string {
	if !known {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}

// medianResult takes the round with the median wall time.
func medianResult(rs []result) result {
	s := append([]result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].took < s[j].took })
	return s[(len(s)-1)/2]
}

// parallel runs f for each target at once and returns the first error.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
