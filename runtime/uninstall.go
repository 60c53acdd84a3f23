package runtime

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
)

// This file is what `uncloud uninstall` needs of the runtime: finding and
// removing what the agent made in Docker and in the firewall, without a
// running agent or a machine state (either may be gone or broken).

// PresentChains are the chains of r that exist now, so that uninstall
// can say what it will remove and, on a second run, that nothing is left.
func (f *IPTables) PresentChains(ctx context.Context, r Rules) []Chain {
	f.mu.Lock()
	defer f.mu.Unlock()
	bin, _ := f.bins()
	var out []Chain
	for _, c := range r.Chains() {
		if f.run(ctx, bin, "-t", c.Table, "-L", c.Name, "-n") == nil {
			out = append(out, c)
		}
	}
	return out
}

// Present reports whether the security-group table exists. A host
// without the nft command has none.
func (g *Groups) Present(ctx context.Context) (bool, error) {
	if g.Netns == "" {
		if _, err := exec.LookPath("nft"); err != nil {
			return false, nil
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.nft(ctx, "", "list", "table", "ip", g.table())
	if err == nil {
		return true, nil
	}
	if strings.Contains(err.Error(), "No such file or directory") {
		return false, nil
	}
	return false, err
}

// Table is the name of the security-group table ("ip uncloud").
func (g *Groups) Table() string { return "ip " + g.table() }

// Leftovers is the local Docker as uninstall sees it.
type Leftovers struct {
	docker *client.Client
}

// OpenLeftovers connects to Docker at host (empty: DOCKER_HOST or the
// default socket). Unavailable reports a Docker that does not answer,
// which on a host without Docker means nothing is there to remove.
func OpenLeftovers(ctx context.Context, host string) (*Leftovers, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("Docker client for %q: %w", host, err)
	}
	if _, err := c.Ping(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w at %s: %w", ErrUnavailable, c.DaemonHost(), err)
	}
	return &Leftovers{docker: c}, nil
}

// Close releases the Docker client.
func (l *Leftovers) Close() error { return l.docker.Close() }

// OwnedContainer is a container the agent made.
type OwnedContainer struct {
	ID, Name, Service, State string
}

// Containers are the containers labelled as machine's (any machine's if
// machine is empty: the state that names it may be gone).
func (l *Leftovers) Containers(ctx context.Context, machine string) ([]OwnedContainer, error) {
	label := LabelMachine
	if machine != "" {
		label += "=" + machine
	}
	list, err := l.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", label))})
	if err != nil {
		return nil, fmt.Errorf("list containers labelled %s: %w", label, err)
	}
	var out []OwnedContainer
	for _, s := range list {
		name := s.ID[:12]
		if len(s.Names) > 0 {
			name = strings.TrimPrefix(s.Names[0], "/")
		}
		out = append(out, OwnedContainer{ID: s.ID, Name: name, Service: s.Labels[LabelService], State: s.State})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveContainer stops a container (10 s, or its own grace period) and
// removes it; its named volumes stay.
func (l *Leftovers) RemoveContainer(ctx context.Context, id string) error {
	secs := 10
	if err := l.docker.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	if err := l.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}

// NetworkState is what uninstall found of the Docker network name.
type NetworkState struct {
	Exists bool
	// Ours: labelled as made by the agent; a network of the same name
	// someone else made is never removed.
	Ours bool
	// Attached names the containers still connected to it.
	Attached []string
}

// ErrNetworkInUse is returned by RemoveNetwork while containers other
// than uncloud's still use the network.
var ErrNetworkInUse = errors.New("containers that are not uncloud's still use it")

// Network inspects the Docker network name (zero: NetworkName).
func (l *Leftovers) Network(ctx context.Context, name string) (NetworkState, error) {
	if name == "" {
		name = NetworkName
	}
	n, err := l.docker.NetworkInspect(ctx, name, network.InspectOptions{})
	if errdefs.IsNotFound(err) {
		return NetworkState{}, nil
	}
	if err != nil {
		return NetworkState{}, fmt.Errorf("inspect Docker network %q: %w", name, err)
	}
	st := NetworkState{Exists: true, Ours: n.Labels[LabelManaged] == "true"}
	for _, c := range n.Containers {
		st.Attached = append(st.Attached, c.Name)
	}
	sort.Strings(st.Attached)
	return st, nil
}

// RemoveNetwork removes the network name (zero: NetworkName) if the
// agent made it and no container is attached any more.
func (l *Leftovers) RemoveNetwork(ctx context.Context, name string) error {
	if name == "" {
		name = NetworkName
	}
	st, err := l.Network(ctx, name)
	if err != nil || !st.Exists {
		return err
	}
	if !st.Ours {
		return fmt.Errorf("Docker network %q was not made by uncloud (no %s label): left alone", name, LabelManaged)
	}
	if len(st.Attached) > 0 {
		return fmt.Errorf("Docker network %q: %w (%s): left alone", name, ErrNetworkInUse, strings.Join(st.Attached, ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := l.docker.NetworkRemove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove Docker network %q: %w", name, err)
	}
	return nil
}
