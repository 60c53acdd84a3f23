package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/uncloud-mesh/uncloud/api"
)

type deployCmd struct {
	Files         []string `short:"f" name:"file" sep:"none" placeholder:"FILE" help:"Compose file; repeat to merge several in order. Default: compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml with its override file (compose.override.yaml, …), searched from the current directory up."`
	ProjectName   string   `short:"p" name:"project-name" placeholder:"NAME" help:"Project name. Default: COMPOSE_PROJECT_NAME, the files' top-level name:, or the project directory's name."`
	Profiles      []string `name:"profile" sep:"none" placeholder:"PROFILE" help:"Enable services of this profile; repeat for several. Default: COMPOSE_PROFILES."`
	EnvFiles      []string `name:"env-file" sep:"none" placeholder:"FILE" help:"Variables for interpolation, instead of the project directory's .env; repeat for several."`
	Strict        bool     `help:"Refuse a file with keys uncloud does not honour, instead of warning."`
	RemoveOrphans bool     `name:"remove-orphans" help:"Remove the project's services that the files no longer name (without it they are listed as orphans)."`
	DryRun        bool     `help:"Show the plan only."`
	Pull          string   `help:"When machines pull images: missing, always or never; default: each service's pull_policy (missing when it has none). Tags are re-resolved to digests unless never." enum:",missing,always,never" default:""`
}

func (deployCmd) Help() string {
	return `Reads a Compose project as 'docker compose' does, shows the plan (create, replace, remove, per machine), then applies it. A changed service is replaced as its deploy.update_config says (default: one container at a time, start-first: the new container must run and be healthy before the old one is removed); a new one that fails rolls the service back to its previous version on every machine the rollout touched (failure_action: pause stops there instead). 'uncloud history' and 'uncloud rollback' show and restore earlier versions.

Files: without -f, the first of compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml found in the current directory or a parent, plus its override file (compose.override.yaml, …) when there is one. Several -f are merged in order, later files overriding earlier ones. Variables (${VAR}, ${VAR:-default}, ${VAR:?message}) come from the environment, then from .env in the project directory (or --env-file). Services with profiles: run only when a --profile (or COMPOSE_PROFILES) names one. Every service is sent with its project name (-p, default: the directory's name).

Projects: a project's services are named <service>.<project> (what 'uncloud ls' shows and every command takes; the bare name works where one project alone has it), so two projects can each have a db. DNS answers <service>.<project>.internal everywhere and <service>.internal inside the project. A service the files no longer name is listed as an orphan; --remove-orphans removes it once the rest is deployed. A name with '_' is written with '-' (project names are DNS labels).

Keys: image, command, environment, env_file, ports, volumes (named and bind), deploy.replicas, deploy.mode, healthcheck.test, restart, pull_policy, and the extensions x-machines: [name, …] (placement), x-allow-from: [service, machine:NAME, ingress] (security group) and x-ports. Ports in Docker's forms ("8080:80", "127.0.0.1:53:53/udp", ranges) go to the machines as Docker's; uncloud's ingress form HOST[/PATH]:PORT/http|https is told apart by its host name, in ports or, so that 'docker compose' still reads the file, in x-ports. Each other key is named in one warning (networks: uncloud has one flat network); --strict makes them an error.

Each image's tag is resolved again to a digest (unless the pull policy is never): a tag that moved replaces the service's containers with the new digest; the same digest leaves them alone. Machines that lack the image pull it first, with the credentials of 'docker login' for its registry; a failed pull stops the deploy before anything changes.

Examples:
  uncloud deploy                                       # ./compose.yaml (+ compose.override.yaml), project: this directory's name
  uncloud deploy --dry-run                             # the plan, and the warnings, without changing anything
  uncloud deploy -f compose.yaml -f compose.prod.yaml  # merged in order
  uncloud deploy -p blog --profile worker --profile ml # name the project, add the services of two profiles
  uncloud deploy --env-file prod.env --strict          # variables from prod.env; any unsupported key is an error
  uncloud deploy --pull always
  uncloud deploy -p blog --remove-orphans              # also remove blog's services the files dropped`
}

// options are the loader's options from the flags.
func (c deployCmd) options(env []string) composeOptions {
	return composeOptions{Files: c.Files, Project: c.ProjectName, Profiles: c.Profiles, EnvFiles: c.EnvFiles, Env: env}
}

// load reads the project and applies --strict and --pull: everything
// deploy decides before it calls an agent (deploy --dry-run included).
func (c deployCmd) load(ctx context.Context, env []string) (composeResult, error) {
	res, err := loadCompose(ctx, c.options(env))
	if err != nil {
		return res, err
	}
	if c.Strict {
		if err := strictError(res.Warnings); err != nil {
			return res, err
		}
	}
	for i := range res.Services {
		if c.Pull != "" {
			res.Services[i].Pull = c.Pull
		}
	}
	return res, nil
}

func (c deployCmd) Run(g *globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := c.load(ctx, os.Environ())
	if err != nil {
		return err
	}
	for _, w := range append(res.Notices, res.Warnings...) {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	fmt.Printf("Project %s (%s)\n", res.Project, strings.Join(displayPaths(res.Files), ", "))
	services := res.Services
	var images []string
	for _, s := range services {
		images = append(images, s.Image)
	}
	auths, err := dockerCredentials{}.forImages(images)
	if err != nil {
		return err
	}
	client, err := g.client()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	inPlan := true
	fmt.Println("Plan:")
	pulls := newImageProgress(os.Stderr)
	defer pulls.Wait()
	req := api.DeployRequest{Services: services, DryRun: c.DryRun, RemoveOrphans: c.RemoveOrphans, RegistryAuths: auths}
	return client.Deploy(ctx, req, func(e api.DeployEvent) error {
		if e.Image != nil {
			pulls.Update(*e.Image)
			return nil
		}
		if inPlan && !e.Plan {
			inPlan = false
			fmt.Println("Applying:")
		}
		fmt.Println("  " + stepLine(e))
		return nil
	})
}
