// Command containers measures uncloud's container commands on a lab of
// machines (network namespaces), each with its own Docker Engine, against
// Docker itself in the same run:
//
//   - `uncloud run --replicas R` spread over the machines, from command to
//     all running (image present everywhere), against `docker run -d` of
//     the same R containers on one machine's engine (target: < 30% more);
//   - `uncloud ps` with N containers across the machines (target: < 300 ms).
//
// Run as root from the repository root (it builds the binaries):
//
//	go run ./bench/containers [-machines 5] [-containers 200] [-replicas 10] [-rounds 3]
//	go run ./bench/containers -quick     # 2 machines, 40 containers
//
// It prints a table and a one-line summary of ratios.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
	"github.com/uncloud-mesh/uncloud/bench/internal/dockerlab"
	"github.com/uncloud-mesh/uncloud/meshaddr"
	"github.com/uncloud-mesh/uncloud/runtime/testimage"
)

func main() {
	machines := flag.Int("machines", 5, "machines, each with its own dockerd")
	containers := flag.Int("containers", 200, "containers in the network for the ps figure")
	replicas := flag.Int("replicas", 10, "replicas for the run figure")
	rounds := flag.Int("rounds", 3, "rounds of the run figure (median reported)")
	quick := flag.Bool("quick", false, "2 machines, 40 containers, 1 round")
	flag.Parse()
	if *quick {
		*machines, *containers, *rounds = 2, 40, 1
	}
	if err := run(*machines, *containers, *replicas, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "containers:", err)
		os.Exit(1)
	}
}

type bench struct {
	*dockerlab.Lab
}

func (b *bench) uncloud(ctx context.Context, i int, args ...string) (string, error) {
	return b.Uncloud(ctx, i, args...)
}

func run(nMachines, nContainers, replicas, rounds int) error {
	ctx := context.Background()
	l, err := dockerlab.Start(ctx, nMachines, os.Stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	b := &bench{l}

	// Figure 1: run of R replicas, against docker run of R containers.
	var dockerTimes, uncloudTimes []time.Duration
	for r := 0; r < rounds; r++ {
		dt, err := b.dockerRun(ctx, replicas)
		if err != nil {
			return err
		}
		ut, err := b.uncloudRun(ctx, fmt.Sprintf("bench%d", r), replicas)
		if err != nil {
			return err
		}
		dockerTimes, uncloudTimes = append(dockerTimes, dt), append(uncloudTimes, ut)
		if _, err := b.uncloud(ctx, 0, "rm", fmt.Sprintf("bench%d", r)); err != nil {
			return err
		}
	}

	fmt.Fprintf(os.Stderr, "run figure: docker %v, uncloud %v (median of %d)\n", median(dockerTimes), median(uncloudTimes), rounds)

	// Figure 2: ps with N containers across the machines.
	fmt.Fprintf(os.Stderr, "starting %d containers for ps…\n", nContainers)
	fillTime, err := b.uncloudRun(ctx, "fill", nContainers)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d containers started in %v\n", nContainers, fillTime.Round(time.Second))
	// Records of other machines' containers arrive by replication: wait
	// until m1 lists them all before timing.
	for deadline := time.Now().Add(5 * time.Minute); ; {
		out, err := b.uncloud(ctx, 0, "ps", "-o", "json")
		var cs []api.ContainerInfo
		if err == nil && json.Unmarshal([]byte(out), &cs) == nil && len(cs) == nContainers {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ps on m1 lists %d of %d containers after 5 minutes (%v)", len(cs), nContainers, err)
		}
		time.Sleep(time.Second)
	}
	var psTimes []time.Duration
	for i := 0; i < 10; i++ {
		start := time.Now()
		out, err := b.uncloud(ctx, 0, "ps", "-o", "json")
		took := time.Since(start)
		if err != nil {
			return err
		}
		var cs []api.ContainerInfo
		if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != nContainers {
			return fmt.Errorf("ps listed %d containers, want %d (%v)", len(cs), nContainers, err)
		}
		psTimes = append(psTimes, took)
	}

	// The same through the agent's socket, without the CLI process and
	// the lab's namespace wrapper.
	client, err := b.Client(0)
	if err != nil {
		return err
	}
	defer client.Close()
	var apiTimes []time.Duration
	for i := 0; i < 20; i++ {
		var cs []api.ContainerInfo
		start := time.Now()
		if err := client.Get(ctx, "/v1/containers", &cs); err != nil {
			return err
		}
		apiTimes = append(apiTimes, time.Since(start))
		if len(cs) != nContainers {
			return fmt.Errorf("API listed %d containers, want %d", len(cs), nContainers)
		}
	}

	load, _ := os.ReadFile("/proc/loadavg")
	dm, um, pm := median(dockerTimes), median(uncloudTimes), median(psTimes)
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tvalue\ttarget\tmethod")
	fmt.Fprintf(w, "docker run -d ×%d, one engine, sequential\t%v\t(baseline)\tmedian of %d rounds\n", replicas, dm.Round(time.Millisecond), rounds)
	fmt.Fprintf(w, "uncloud run --replicas %d over %d machines\t%v\t< 1.3× docker\tcommand to all running, median of %d rounds\n", replicas, nMachines, um.Round(time.Millisecond), rounds)
	fmt.Fprintf(w, "uncloud ps, %d containers on %d machines\t%v\t< 300 ms\tmedian of 10, CLI process included (p90 %v)\n", nContainers, nMachines, pm.Round(time.Millisecond), pct(psTimes, 0.9).Round(time.Millisecond))
	fmt.Fprintf(w, "ps API call (GET /v1/containers), %d containers\t%v\t< 300 ms\tmedian of 20 on the agent's socket (p90 %v)\n", nContainers, median(apiTimes).Round(time.Millisecond), pct(apiTimes, 0.9).Round(time.Millisecond))
	w.Flush()
	fmt.Printf("summary: uncloud run / docker run = %.2f; ps %d containers = %v (API %v); load average %s", float64(um)/float64(dm), nContainers, pm.Round(time.Millisecond), median(apiTimes).Round(time.Millisecond), load)
	return nil
}

// dockerRun times `docker run -d` of n containers on m1's engine, on the
// uncloud network, one after the other as a user's loop would, then
// removes them.
func (b *bench) dockerRun(ctx context.Context, n int) (time.Duration, error) {
	var ids []string
	start := time.Now()
	for i := 0; i < n; i++ {
		out, err := exec.CommandContext(ctx, "docker", "-H", b.Dockers[0].DockerHost(), "run", "-d",
			"--network", "uncloud", "--dns", meshaddr.Subnet(1).MachineAddr().String(), "--restart", "unless-stopped", testimage.Tag).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("docker run: %w: %s", err, out)
		}
		ids = append(ids, strings.TrimSpace(string(out)))
	}
	took := time.Since(start)
	rm := exec.CommandContext(ctx, "docker", append([]string{"-H", b.Dockers[0].DockerHost(), "rm", "-f"}, ids...)...)
	if out, err := rm.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("docker rm: %w: %s", err, out)
	}
	return took, nil
}

// uncloudRun times `uncloud run --replicas n` until it returns, which is
// when every container was created and started; it checks they all were.
func (b *bench) uncloudRun(ctx context.Context, name string, n int) (time.Duration, error) {
	start := time.Now()
	out, err := b.uncloud(ctx, 0, "run", "--name", name, "--replicas", fmt.Sprint(n), "-o", "json", testimage.Tag)
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("uncloud run: %w\n%s", err, out)
	}
	var res api.ServiceResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Containers) != n || res.Failed() > 0 {
		return 0, fmt.Errorf("uncloud run made %d containers, %d failed (%v)", len(res.Containers), res.Failed(), err)
	}
	return took, nil
}

func median(ds []time.Duration) time.Duration { return pct(ds, 0.5) }

func pct(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1)+0.5)]
}
