package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

// The container commands: kong flattens these into the top level
// (uncloud run, ps, ls, …) through containerCmds embedded in cli.
type containerCmds struct {
	Run      runCmd      `cmd:"" help:"Start a service: containers placed on named machines or spread over the live ones."`
	Ps       psCmd       `cmd:"" help:"List every container of the network: machine, address, state, health, image, age."`
	Ls       lsCmd       `cmd:"" help:"List services."`
	Inspect  inspectCmd  `cmd:"" help:"Show a service: how it was started and its containers."`
	Scale    scaleCmd    `cmd:"" help:"Change the number of containers of a service."`
	Rm       rmCmd       `cmd:"" help:"Remove a service and its containers on every machine."`
	Stop     stopCmd     `cmd:"" help:"Stop the containers of a service."`
	Start    startCmd    `cmd:"" help:"Start the stopped containers of a service."`
	Logs     logsCmd     `cmd:"" help:"Show the logs of services' containers (default: every service), merged, each line prefixed with container@machine."`
	Exec     execCmd     `cmd:"" help:"Run a command in a container of a service."`
	Image    imageCmd    `cmd:"" help:"Images: list, remove and prune them on every machine, and move them between machines without a registry."`
	Deploy   deployCmd   `cmd:"" help:"Make the services of a Compose file true: plan, then a rolling update that rolls back on failure."`
	History  historyCmd  `cmd:"" help:"List a service's last versions: when, image digest, who deployed them."`
	Rollback rollbackCmd `cmd:"" help:"Deploy a service's previous version (or --to N) again, as a rolling update."`
	Volume   volumeCmd   `cmd:"" help:"Named volumes: where each lives and which services use it."`
}

type runCmd struct {
	Name      string   `help:"Service name (a DNS label); default: from the image name."`
	Replicas  int      `help:"Number of containers (replicated mode)." default:"1"`
	Machine   []string `short:"m" help:"Machines to run on (names or IDs, comma-separated); default: spread over the live machines." sep:","`
	Mode      string   `help:"replicated (Replicas containers) or global (one per machine)." enum:"replicated,global" default:"replicated"`
	Env       []string `short:"e" help:"Environment variable KEY=VALUE. Repeatable." sep:"none"`
	Volume    []string `short:"v" help:"VOLUME:/path[:ro] (a named volume on the machine; it keeps the service there), /host/path:/path[:ro] or tmpfs:/path. Repeatable." sep:"none"`
	Publish   []string `short:"p" help:"Port: Docker's [IP:]HOST_PORT:PORT[/tcp|udp] (ranges too) publishes on each machine running a replica; PORT[/udp] alone names it for SRV records; app.example.com[/path]:PORT/https is served by the ingress. Repeatable." sep:"none"`
	Expose    []string `help:"Container port without publishing (SRV records), PORT[-END][/udp]. Repeatable." sep:"none"`
	runKeys   `embed:""`
	Restart   string   `help:"Restart policy: no, always, unless-stopped, on-failure[:N]." default:"unless-stopped"`
	AllowFrom []string `name:"allow-from" help:"Security group: who may connect to this service's containers: SERVICE (its containers), machine:NAME, or ingress. Repeatable; default: the whole network." sep:","`
	Pull      string   `help:"When target machines pull the image: missing (only those that lack it), always (and re-resolve the tag), never." enum:"missing,always,never" default:"missing"`
	Secret    []string `help:"Secret mounted at /run/secrets/NAME: NAME (stored before) or NAME=@FILE[,target=PATH,mode=0400,uid=N,gid=N]; stored sealed. Repeatable." sep:"none"`
	Config    []string `help:"Config mounted at /NAME: as --secret. Repeatable." sep:"none"`
	Output    string   `short:"o" enum:"table,json" default:"table" help:"table or json."`
	Image     string   `arg:"" help:"Image: pulled from its registry by the machines that lack it (credentials from 'docker login'), or sent with 'uncloud image push'."`
	Cmd       []string `arg:"" optional:"" passthrough:"" help:"Command and arguments."`
}

func (runCmd) Help() string {
	return `The image's tag is resolved once, to a digest, and every replica runs exactly
that digest (also after 'uncloud scale', even if the tag moves); 'uncloud
deploy' and '--pull always' resolve it again. A private registry needs no
uncloud login: the credentials of 'docker login' for that registry go with
this call to the machines that pull, and nowhere else.

Ports: -p 8080:80 publishes host port 8080 on every machine that runs a
replica (so two replicas never share a machine; more replicas than machines
is refused). A named volume (-v data:/path) keeps the service on the
machines that hold it. --reserve-memory and --reserve-cpus are counted by
placement: a machine without room is not chosen, and the reason is said.

Examples:
  uncloud run nginx:1.27 -p 8080:80 --replicas 3
  uncloud run postgres:16 -v pgdata:/var/lib/postgresql/data --memory 1g --reserve-memory 512m
  uncloud run app:2 --constraint node.labels.disk==ssd --constraint node.platform.arch==arm64
  uncloud run registry.example.com:5000/team/app:2 -m m1,m2 -e MODE=prod
  uncloud run --pull always --name web app:latest
  uncloud run -e DB_PASSWORD=x --secret api_key=@key.txt app:1

-e values, secrets and configs are stored sealed for the network's
machines; 'ps', 'inspect' and 'state ls' show their names only.`
}

func (c runCmd) Run(g *globals) error {
	auth, err := dockerCredentials{}.forImage(c.Image)
	if err != nil {
		return err
	}
	req := api.RunRequest{Name: c.Name, Image: c.Image, Cmd: c.Cmd, Env: c.Env, Volumes: c.Volume, Ports: c.Publish,
		Restart: c.Restart, Replicas: c.Replicas, Mode: c.Mode, Machines: c.Machine, AllowFrom: c.AllowFrom,
		Pull: c.Pull, RegistryAuth: auth, Expose: c.Expose, By: cliUser()}
	if err := c.runKeys.apply(&req); err != nil {
		return err
	}
	for _, kv := range []struct {
		kind string
		vals []string
	}{{"secret", c.Secret}, {"config", c.Config}} {
		files, contents, err := fileFlags(kv.kind, kv.vals)
		if err != nil {
			return err
		}
		req.Files, req.Secrets = append(req.Files, files...), append(req.Secrets, contents...)
	}
	if c.Output == "json" {
		res, err := agentCall(g, longCommand, func(ctx context.Context, a *api.Client) (api.ServiceResult, error) {
			return a.RunService(ctx, req)
		})
		if err != nil {
			return err
		}
		return printResult(res, c.Output)
	}
	// Pulling nothing but starting many containers still takes seconds:
	// say each one as it comes up (on stderr), then the table.
	client, ctx, release, err := agentFor(g, longCommand)
	if err != nil {
		return err
	}
	defer release()
	total := max(c.Replicas, 1)
	if c.Mode == "global" {
		total = 0 // one per machine: the count is the agent's to know
	}
	res, err := client.RunServiceStream(ctx, req, runEvents(total))
	if err != nil {
		return err
	}
	return printResult(res, c.Output)
}

// runEvents shows a run's or a scale's progress on stderr: the image's
// pull on each machine, then each container as it comes up.
func runEvents(total int) func(api.RunEvent) error {
	images := newImageProgress(os.Stderr)
	done := 0
	return func(e api.RunEvent) error {
		if e.Image != nil {
			images.Update(*e.Image)
		}
		if e.Container != nil {
			if done == 0 {
				images.Wait() // the bars end before the container lines start
			}
			done++
			fmt.Fprintln(os.Stderr, runProgress(done, total, *e.Container))
		}
		return nil
	}
}

// runProgress is one line of `run`'s progress: "[2/10] m1: web-3 created
// at <mesh address>" or the container's error.
func runProgress(done, total int, r api.ContainerResult) string {
	count := fmt.Sprintf("[%d/%d]", done, total)
	if total == 0 {
		count = fmt.Sprintf("[%d]", done)
	}
	if r.Error != "" {
		return fmt.Sprintf("%s %s: error: %s", count, r.Machine, r.Error)
	}
	return fmt.Sprintf("%s %s: %s %s at %s", count, r.Machine, r.Name, r.Action, r.Address)
}

// printResult prints each container's outcome; it fails when any failed.
func printResult(res api.ServiceResult, output string) error {
	if output == "json" {
		if err := printJSON(res); err != nil {
			return err
		}
	} else {
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "SERVICE\tMACHINE\tCONTAINER\tADDRESS\tRESULT")
		for _, r := range res.Containers {
			result := r.Action
			if r.Error != "" {
				result = "error: " + r.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", res.Service, r.Machine, dash(r.Name), dash(r.Address), result)
		}
		w.Flush()
	}
	if n := res.Failed(); n > 0 {
		return fmt.Errorf("%d of %d containers failed", n, len(res.Containers))
	}
	return nil
}

type psCmd struct {
	Output string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c psCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.ContainerInfo, error) {
		return a.Containers(ctx)
	}, renderContainers)
}

// renderContainers shows the containers as a table.
func renderContainers(cs []api.ContainerInfo) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tCONTAINER\tMACHINE\tADDRESS\tSTATE\tHEALTH\tIMAGE\tDIGEST\tAGE")
	for _, ci := range cs {
		machine := ci.Machine
		if ci.MachineState == "unreachable" {
			machine += " (unreachable)"
		}
		state := ci.State
		if ci.MachineState == "unreachable" {
			state += "?"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(ci.Service), ci.Name, machine, dash(ci.Address),
			dash(state), dash(ci.Health), ci.Image, dash(shortDigest(ci.ImageDigest)), age(ci.Created))
	}
	return w.Flush()
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

type lsCmd struct {
	Project string `short:"p" name:"project" placeholder:"NAME" help:"Only this project's services."`
	Output  string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (lsCmd) Help() string {
	return `Services grouped by project: the default project (services made with
'uncloud run') first, then each Compose project (deploy -p). SERVICE is the
name every command takes: <service>.<project>, or the bare name in the
default project; a bare name also works where only one project has it.

Examples:
  uncloud ls
  uncloud ls -p blog -o json`
}

func (c lsCmd) Run(g *globals) error {
	return agentShow(g, shortCommand, c.Output, func(ctx context.Context, a *api.Client) ([]api.ServiceInfo, error) {
		ss, err := a.Services(ctx)
		if c.Project != "" {
			ss = slices.DeleteFunc(ss, func(s api.ServiceInfo) bool { return s.Project != c.Project })
		}
		return ss, err
	}, renderServices)
}

// renderServices shows the services as a table, a blank row between projects.
func renderServices(ss []api.ServiceInfo) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECT\tSERVICE\tMODE\tRUNNING\tIMAGE\tPORTS\tMACHINES")
	for i, s := range ss {
		if i > 0 && s.Project != ss[i-1].Project {
			fmt.Fprintln(w, "\t\t\t\t\t\t")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", s.Project, s.Name, s.Mode, s.Running, s.Total, dash(s.Image),
			dash(strings.Join(s.Ports, ",")), dash(strings.Join(s.Machines, ",")))
	}
	return w.Flush()
}

type inspectCmd struct {
	Service string `arg:"" help:"Service name."`
}

func (c inspectCmd) Run(g *globals) error {
	det, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) (api.ServiceDetail, error) {
		return a.InspectService(ctx, c.Service)
	})
	if err != nil {
		return err
	}
	return printJSON(det)
}

type scaleCmd struct {
	Service  string `arg:"" help:"Service name."`
	Replicas int    `arg:"" help:"Number of containers wanted."`
	Output   string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (c scaleCmd) Run(g *globals) error {
	client, ctx, release, err := agentFor(g, longCommand)
	if err != nil {
		return err
	}
	defer release()
	// New replicas run the service's pinned image; machines that lack it
	// pull it with the user's credentials for its registry.
	det, err := client.InspectService(ctx, c.Service)
	if err != nil {
		return err
	}
	auth, err := dockerCredentials{}.forImage(det.Image)
	if err != nil {
		return err
	}
	req := api.ScaleRequest{Replicas: c.Replicas, RegistryAuth: auth}
	var res api.ServiceResult
	if c.Output == "json" {
		res, err = client.ScaleService(ctx, c.Service, req)
	} else {
		res, err = client.ScaleServiceStream(ctx, c.Service, req, runEvents(0))
	}
	if err != nil {
		return err
	}
	if len(res.Containers) == 0 && c.Output != "json" {
		fmt.Printf("Service %s already has %d containers.\n", c.Service, c.Replicas)
		return nil
	}
	return printResult(res, c.Output)
}

type serviceArg struct {
	Service string `arg:"" help:"Service name."`
	Output  string `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

type rmCmd struct {
	Services []string `arg:"" optional:"" help:"Services to remove."`
	Project  string   `short:"p" name:"project" placeholder:"NAME" help:"Remove every service of this project."`
	Output   string   `short:"o" enum:"table,json" default:"table" help:"table or json."`
}

func (rmCmd) Help() string {
	return `Removes each service and its containers on every machine, and its history.
With --project, every service of that project.

Examples:
  uncloud rm web
  uncloud rm db.blog cache.blog
  uncloud rm --project blog`
}

type stopCmd struct{ serviceArg }
type startCmd struct{ serviceArg }

func (c rmCmd) Run(g *globals) error {
	services := c.Services
	if c.Project != "" {
		ss, err := agentCall(g, shortCommand, func(ctx context.Context, a *api.Client) ([]api.ServiceInfo, error) {
			return a.Services(ctx)
		})
		if err != nil {
			return err
		}
		n := 0
		for _, s := range ss {
			if s.Project == c.Project {
				services = append(services, s.Name)
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("project %q has no services (see 'uncloud ls')", c.Project)
		}
	}
	if len(services) == 0 {
		return fmt.Errorf("name the services to remove, or a project with --project")
	}
	var errs []error
	for _, name := range services {
		if err := serviceAction(g, (*api.Client).RemoveService, serviceArg{Service: name, Output: c.Output}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
func (c stopCmd) Run(g *globals) error {
	return serviceAction(g, (*api.Client).StopService, c.serviceArg)
}
func (c startCmd) Run(g *globals) error {
	return serviceAction(g, (*api.Client).StartService, c.serviceArg)
}

// serviceAction makes one of the calls that act on a whole service and
// prints what happened to its containers.
func serviceAction(g *globals, act func(*api.Client, context.Context, string) (api.ServiceResult, error), s serviceArg) error {
	res, err := agentCall(g, longCommand, func(ctx context.Context, a *api.Client) (api.ServiceResult, error) {
		return act(a, ctx, s.Service)
	})
	if err != nil {
		return err
	}
	return printResult(res, s.Output)
}

type logsCmd struct {
	Services   []string `arg:"" optional:"" help:"Services; default: every service."`
	Project    string   `short:"p" name:"project" placeholder:"NAME" help:"Every service of this project (with any named)."`
	Follow     bool     `short:"f" help:"Keep following new lines."`
	Since      string   `help:"Only lines since this time (RFC 3339 or Unix seconds) or duration ago (e.g. 10m)."`
	Until      string   `help:"Only lines before this time (RFC 3339 or Unix seconds) or duration ago (e.g. 1m)."`
	Tail       string   `short:"n" help:"Only this many last lines of each container (or all)." default:"all"`
	Timestamps bool     `short:"t" help:"Show each line's time."`
}

func (logsCmd) Help() string {
	return `Lines of every container of the services, read from their machines at once
and merged in time order (with -f, as they come), each prefixed with
container@machine. A machine that cannot be read says so in a line.

Examples:
  uncloud logs                      # every service
  uncloud logs web db -n 20 -t
  uncloud logs web -f --since 10m
  uncloud logs -p blog -n 50         # every service of project blog
  uncloud logs --since 2026-01-02T15:00:00Z --until 30m`
}

func (c logsCmd) Run(g *globals) error {
	client, err := g.client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if !c.Follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	show := func(l api.LogLine) error {
		prefix := l.Container + "@" + l.Machine + " | "
		if c.Timestamps && !l.Time.IsZero() {
			prefix = l.Time.Format(time.RFC3339Nano) + " " + prefix
		}
		_, err := fmt.Fprintln(os.Stdout, prefix+l.Text)
		return err
	}
	o := api.LogsRequest{Services: c.Services, Project: c.Project, Follow: c.Follow, Since: c.Since, Until: c.Until, Tail: c.Tail}
	if len(c.Services) == 1 && c.Project == "" {
		// One service's own call, which agents older than the
		// multi-service one answer too.
		err = client.ServiceLogs(ctx, c.Services[0], o, show)
	} else {
		err = client.Logs(ctx, o, show)
	}
	if ctx.Err() != nil && c.Follow {
		return nil // interrupted: the normal end of -f
	}
	return err
}
