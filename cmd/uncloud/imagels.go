package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// `uncloud image ls|rm|prune`: embedded in imageCmd (images.go).
type imageStoreCmds struct {
	Ls    imageLsCmd    `cmd:"" help:"List every machine's images: names, ID, digest, size, age, and the services whose containers use each."`
	Rm    imageRmCmd    `cmd:"" help:"Remove an image from machines; refused while an uncloud container uses it, unless --force."`
	Prune imagePruneCmd `cmd:"" help:"Remove images no container uses: dangling ones, or with --all every unused one."`
}

// imageCommand bounds rm and prune, which wait on Docker on every machine.
const imageCommand = 20 * time.Minute

type imageLsCmd struct {
	Machine []string `short:"m" help:"Machines to ask (names or IDs, comma-separated); default: every machine that may run containers." sep:","`
	Output  string   `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (imageLsCmd) Help() string {
	return `Each machine's Docker is asked directly, so the list is what is on disk now. One row per image and machine; an image on several machines has its rows together. SERVICES names the uncloud services whose containers (running or stopped) use the image on that machine, and counts other containers as "+N other". A machine that cannot be asked is named below the table.

Examples:
  uncloud image ls
  uncloud image ls -m m1,m2
  uncloud image ls -o json | jq '.images[] | select(.in_use == 0)'`
}

func (c imageLsCmd) Run(g *globals) error {
	return agentShow(g, time.Minute, c.Output, func(ctx context.Context, a *api.Client) (api.ImageList, error) {
		return a.ListImages(ctx, api.ImageListRequest{Machines: c.Machine})
	}, func(res api.ImageList) error { return renderImageList(os.Stdout, res) })
}

func renderImageList(out io.Writer, res api.ImageList) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tID\tDIGEST\tMACHINE\tSIZE\tCREATED\tSERVICES")
	for _, i := range res.Images {
		name := "<none>"
		if len(i.Tags) > 0 {
			name = strings.Join(i.Tags, ",")
		} else if len(i.Digests) > 0 {
			name, _, _ = strings.Cut(i.Digests[0], "@")
		}
		digest := "-"
		if len(i.Digests) > 0 {
			_, d, _ := strings.Cut(i.Digests[0], "@")
			digest = shortDigest(d)
		}
		users := strings.Join(i.Services, ",")
		if i.OtherContainers > 0 {
			users = strings.TrimPrefix(users+fmt.Sprintf(",+%d other", i.OtherContainers), ",")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, shortDigest(i.ID), digest, i.Machine,
			humanBytes(i.Size), age(i.Created), dash(users))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, m := range res.Machines {
		if m.State != "ok" {
			fmt.Fprintf(out, "%s: %s: %s\n", m.Machine, m.State, m.Error)
		}
		if m.Truncated {
			fmt.Fprintf(out, "%s: has more images than it lists\n", m.Machine)
		}
	}
	return nil
}

type imageRmCmd struct {
	Image   string   `arg:"" help:"Image: a name (repo:tag), an ID or a digest (repo@sha256:…)."`
	Machine []string `short:"m" help:"Machines to remove it from (names or IDs, comma-separated); default: every machine that has it." sep:","`
	Force   bool     `help:"Remove it even where uncloud containers use it (Docker still keeps an image a running container uses, and says so)."`
	Output  string   `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (imageRmCmd) Help() string {
	return `Every machine asked says first whether it has the image and whether an uncloud container (running or stopped) uses it there. If one does, nothing is removed anywhere and the error names the service, the container and the machine; --force removes it anyway. A name that is one of several names of an image removes only that name, as 'docker rmi' does.

Examples:
  uncloud image rm web:1
  uncloud image rm web:1 -m m2
  uncloud image rm sha256:3f2a9c81d07b --force`
}

func (c imageRmCmd) Run(g *globals) error {
	res, err := agentCall(g, imageCommand, func(ctx context.Context, a *api.Client) (api.ImageRemoveResult, error) {
		return a.RemoveImage(ctx, api.ImageRemoveRequest{Image: c.Image, Machines: c.Machine, Force: c.Force})
	})
	if err != nil {
		return err
	}
	if c.Output == "json" {
		if err := printJSON(res); err != nil {
			return err
		}
		return removeOutcome(res)
	}
	return renderRemove(os.Stdout, res)
}

func renderRemove(out io.Writer, res api.ImageRemoveResult) error {
	for _, m := range res.Machines {
		switch m.State {
		case "removed":
			what := "untagged " + dash(strings.Join(m.Untagged, ", "))
			if len(m.Deleted) > 0 {
				what += fmt.Sprintf("; deleted %d image(s) (%s)", len(m.Deleted), shortDigest(m.Deleted[0]))
			} else {
				what += "; the image stays (another name or a container still holds it)"
			}
			fmt.Fprintf(out, "%s: removed %s: %s\n", m.Machine, res.Image, what)
		case "absent":
			fmt.Fprintf(out, "%s: does not have %s\n", m.Machine, res.Image)
		default:
			fmt.Fprintf(out, "%s: %s: %s\n", m.Machine, m.State, m.Error)
		}
	}
	return removeOutcome(res)
}

// removeOutcome fails the command when a machine may still have the
// image: it refused, failed or could not be asked.
func removeOutcome(res api.ImageRemoveResult) error {
	var left []string
	for _, m := range res.Machines {
		if m.State != "removed" && m.State != "absent" {
			left = append(left, m.Machine+" ("+m.State+")")
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%s may still be on %s", res.Image, strings.Join(left, ", "))
	}
	return nil
}

type imagePruneCmd struct {
	Machine []string `short:"m" help:"Machines to prune (names or IDs, comma-separated); default: every machine that may run containers." sep:","`
	All     bool     `short:"a" help:"Remove every image no container uses, not only dangling (untagged) ones."`
	DryRun  bool     `help:"Say what would be removed, remove nothing."`
	Output  string   `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (imagePruneCmd) Help() string {
	return `Like 'docker image prune' on each machine at once: by default only dangling images (no tag: left behind when a tag moved to a newer image); with --all every image that no container on that machine uses, uncloud's or not, running or stopped. An image a container uses is never removed: it is not a candidate, and each removal is Docker's own unforced one, which refuses an image a container was made from meanwhile. An image a service of the network is pinned to stays on every machine, with or without a container there, so a later scale-up finds it. The space reclaimed is about: each image's size less the layers Docker says it shares with others (Docker before 23 does not say, so the whole size).

Examples:
  uncloud image prune --dry-run
  uncloud image prune --all -m m2
  uncloud image prune -a -o json`
}

func (c imagePruneCmd) Run(g *globals) error {
	res, err := agentCall(g, imageCommand, func(ctx context.Context, a *api.Client) (api.ImagePruneResult, error) {
		return a.PruneImages(ctx, api.ImagePruneRequest{Machines: c.Machine, All: c.All, DryRun: c.DryRun})
	})
	if err != nil {
		return err
	}
	if c.Output == "json" {
		if err := printJSON(res); err != nil {
			return err
		}
		return pruneOutcome(res)
	}
	return renderPrune(os.Stdout, res)
}

func renderPrune(out io.Writer, res api.ImagePruneResult) error {
	verb, reclaimed := "removed", "reclaimed"
	if res.DryRun {
		verb, reclaimed = "would remove", "to reclaim"
	}
	for _, m := range res.Machines {
		if m.State != "ok" {
			fmt.Fprintf(out, "%s: %s: %s\n", m.Machine, m.State, m.Error)
			continue
		}
		fmt.Fprintf(out, "%s: %s %d image(s), about %s %s\n", m.Machine, verb, m.Count, humanBytes(m.Reclaimed), reclaimed)
		for _, img := range m.Removed {
			name := "<none>"
			if len(img.Tags) > 0 {
				name = strings.Join(img.Tags, ",")
			}
			fmt.Fprintf(out, "  %s %s %s\n", name, shortDigest(img.ID), humanBytes(img.Size))
		}
		if n := m.Count - len(m.Removed); n > 0 {
			fmt.Fprintf(out, "  and %d more\n", n)
		}
		for _, f := range m.Failed {
			fmt.Fprintf(out, "  kept %s\n", f)
		}
	}
	return pruneOutcome(res)
}

// pruneOutcome fails the command when a machine could not be pruned.
func pruneOutcome(res api.ImagePruneResult) error {
	var bad []string
	for _, m := range res.Machines {
		if m.State != "ok" {
			bad = append(bad, m.Machine+" ("+m.State+")")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("not pruned: %s", strings.Join(bad, ", "))
	}
	return nil
}
