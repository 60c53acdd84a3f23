package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type imageCmd struct {
	Push imagePushCmd `cmd:"" help:"Send an image from this machine's Docker to other machines' (only to those that lack it)."`

	imageStoreCmds `embed:""` // ls, rm, prune (imagels.go)
}

type imagePushCmd struct {
	Image   string   `arg:"" help:"Image in this machine's Docker (a name with a tag)."`
	Machine []string `short:"m" help:"Machines to send it to (names or IDs, comma-separated); default: every other machine that runs containers." sep:","`
	Force   bool     `help:"Replace the tag on machines where it names another image (refused without it: that tag may be another machine's)."`
	Method  string   `enum:"registry,load" default:"registry" help:"registry: each machine gets only the layers it lacks (this machine's Docker pushes to its agent's loopback registry, each target's Docker pulls from its own agent, which fetches missing layers over the mesh); load: a whole docker save to each machine's docker load, for engines that cannot use the agent's loopback registry."`
}

func (imagePushCmd) Help() string {
	return `Sends an image from this machine's Docker to other machines' Docker, under the same name. With the default method only the layers a machine lacks cross the mesh; a push that is interrupted leaves no image under the name on any machine and the next push resumes with the layers that arrived. A machine whose platform differs from the image's is refused.`
}

func (c imagePushCmd) Run(g *globals) error {
	client, err := g.client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	failed, total := 0, 0
	show := newImageProgress(os.Stdout)
	err = client.PushImage(ctx, api.PushRequest{Image: c.Image, Machines: c.Machine, Force: c.Force, Method: c.Method}, func(p api.ImageProgress) error {
		if p.Final() {
			total++
			if p.Status == "failed" {
				failed++
			}
		}
		show.Update(p)
		return nil
	})
	show.Wait()
	if err != nil {
		return err
	}
	if total == 0 {
		fmt.Println("No other machine to send it to.")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d machines did not get %s", failed, total, c.Image)
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
