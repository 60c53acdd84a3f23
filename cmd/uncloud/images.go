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
	Image   string   `arg:"" help:"Image in this machine's Docker."`
	Machine []string `short:"m" help:"Machines to send it to (names or IDs, comma-separated); default: every other machine that runs containers." sep:","`
	Force   bool     `help:"Replace the tag on machines where it names another image (refused without it: that tag may be another machine's)."`
}

func (c imagePushCmd) Run(g *globals) error {
	client, err := api.NewClient(g.Connect, api.SSHOptions{})
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	start := time.Now()
	failed, total := 0, 0
	err = client.PushImage(ctx, api.PushRequest{Image: c.Image, Machines: c.Machine, Force: c.Force}, func(p api.PushProgress) error {
		switch p.Status {
		case "sending":
			fmt.Printf("%s: %s sent\n", p.Machine, humanBytes(p.Bytes))
		case "present":
			total++
			fmt.Printf("%s: already has %s\n", p.Machine, c.Image)
		case "loaded":
			total++
			fmt.Printf("%s: loaded %s (%s in %v)\n", p.Machine, c.Image, humanBytes(p.Bytes), time.Since(start).Round(100*time.Millisecond))
		default:
			total++
			failed++
			fmt.Printf("%s: failed: %s\n", p.Machine, p.Error)
		}
		return nil
	})
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
